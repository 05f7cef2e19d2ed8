"""Lambda adapter: real API Gateway / Function URL / SQS / S3 / EventBridge / SNS events, moto's S3 and SQS,
a real runtime running the example's tasks to completion."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from outlast import RuntimeUnavailableError
from outlast._adapter import AdapterEndpoints, AdapterSettings
from outlast._offload import REFERENCE_KEY
from outlast.adapters.aws_lambda import EventRoutes, EventTriggerError, UnroutedEventError, outlast_lambda_handler
from tests.adapters import _lambda_events as events
from tests.adapters._support import app_env, down_url, example_runtime_fixture, load_example
from tests.conftest import SECRET_KEY, free_port

MOTO_PORT = free_port()
AWS_ENV = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "outlast-payloads"

example_runtime = example_runtime_fixture("lambda_app", extra_env=lambda: AWS_ENV)


@pytest.fixture(scope="module")
def aws() -> Iterator[None]:
    """moto's server on a free port; boto3 here and in the runtime's task processes talks to it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=MOTO_PORT, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in AWS_ENV.items():
            patch.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        boto3.client("s3").create_bucket(Bucket="uploads")
        yield
    server.stop()


@pytest.fixture(scope="module")
def example(aws, example_runtime):
    return load_example("lambda_app", "handler", app_env(example_runtime, OUTLAST_OFFLOAD_BUCKET=BUCKET))


def invoke(example, event: dict):
    return example.handler(event, events.context())


def response_json(answer: dict) -> dict:
    assert answer["statusCode"] < 300, answer
    return json.loads(answer["body"])


@pytest.mark.parametrize("shape", ["api_gateway_v1", "api_gateway_v2", "function_url"])
def test_http_events_reach_the_app_and_trigger_runs(example, example_runtime, shape):
    batch = {"source": shape, "items": [1, 2, 3]}
    if shape == "api_gateway_v1":
        event = events.api_gateway_v1("POST", "/ingest", batch)
    else:
        event = events.api_gateway_v2("POST", "/ingest", batch, function_url=shape == "function_url")
    answer = invoke(example, event)
    assert answer["statusCode"] == 202, answer
    run = example_runtime.client().poll(response_json(answer)["run_id"], timeout=60)
    assert run.status == "COMPLETED", run.error
    assert run.output == {"source": shape, "items": 3, "total": 6}


def test_client_is_made_once_and_reused_across_invocations(example):
    invoke(example, events.api_gateway_v1("GET", "/outlast/health"))
    clients = list(example.outlast.endpoints._async_clients.values())
    invoke(example, events.api_gateway_v2("GET", "/outlast/health"))
    invoke(example, events.scheduled_event("nightly-cleanup"))
    assert len(clients) == 1
    assert list(example.outlast.endpoints._async_clients.values()) == clients
    assert example.handler.endpoints is example.outlast.endpoints  # HTTP routes and events share it


def test_health_through_api_gateway(example):
    body = response_json(invoke(example, events.api_gateway_v1("GET", "/outlast/health")))
    assert body["status"] == "ok" and body["tasks"]["lambda-ingest"]["deployed"] is True


def test_large_payload_travels_through_s3_and_the_task_gets_it(example, example_runtime):
    items = list(range(60_000))  # ~400 KB of JSON: over the 256 KiB threshold
    answer = invoke(example, events.api_gateway_v2("POST", "/ingest", {"source": "big", "items": items}))
    run = example_runtime.client().poll(response_json(answer)["run_id"], timeout=60)
    assert run.status == "COMPLETED", run.error
    assert run.output == {"source": "big", "items": len(items), "total": sum(items)}
    ref = run.payload[REFERENCE_KEY]  # the runtime stored a reference, not the payload
    stored = boto3.client("s3").get_object(Bucket=ref["bucket"], Key=ref["key"])["Body"].read()
    assert ref["bucket"] == BUCKET and json.loads(stored)["items"] == items


def _queue(name: str) -> tuple[str, str]:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _receive(url: str, count: int) -> list[dict]:
    sqs, messages = boto3.client("sqs"), []
    while len(messages) < count:
        messages += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                        WaitTimeSeconds=1).get("Messages", [])
    return messages


def test_sqs_triggers_one_run_per_message_and_reports_failed_records(example, example_runtime):
    url, arn = _queue("orders")
    sqs = boto3.client("sqs")
    for body in ({"order": {"order_id": 1, "amount": 10}}, {"order": {"order_id": 2, "amount": 20}}, {"no": "order"}):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    messages = _receive(url, 3)
    bad = next(m["MessageId"] for m in messages if "order" not in json.loads(m["Body"]))

    answer = invoke(example, events.sqs_event(arn, messages))
    assert answer == {"batchItemFailures": [{"itemIdentifier": bad}]}

    client = example_runtime.client()
    runs = {run.idempotency_key: run for run in client.iter_runs(task="lambda-process-order")}
    good = [m for m in messages if m["MessageId"] != bad]
    for message in good:
        run = client.poll(runs[f"sqs:{message['MessageId']}"].id, timeout=60)
        assert run.output == {"order_id": json.loads(message["Body"])["order"]["order_id"],
                              "charged": json.loads(message["Body"])["order"]["amount"]}

    # Redelivery of the same messages returns the same runs: the message id is the idempotency key.
    assert invoke(example, events.sqs_event(arn, good)) == {"batchItemFailures": []}
    assert len([r for r in client.iter_runs(task="lambda-process-order")
                if r.idempotency_key in {f"sqs:{m['MessageId']}" for m in good}]) == 2


def test_sqs_from_an_unrouted_queue_fails_its_records(example):
    url, arn = _queue("nobody-listens")
    boto3.client("sqs").send_message(QueueUrl=url, MessageBody="{}")
    messages = _receive(url, 1)
    assert invoke(example, events.sqs_event(arn, messages)) == {
        "batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}


def test_runtime_down_fails_every_sqs_record_and_raises_for_other_events(aws):
    endpoints = AdapterEndpoints(AdapterSettings.from_mapping({}, api_url=down_url(), secret_key=SECRET_KEY,
                                                              timeout=3))
    routes = EventRoutes({"sqs:orders": "lambda-process-order", "s3:uploads": "lambda-thumbnail"})
    handler = outlast_lambda_handler(routes=routes, endpoints=endpoints)
    url, arn = _queue("orders")
    boto3.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps({"order_id": 9, "amount": 1}))
    messages = _receive(url, 1)
    assert handler(events.sqs_event(arn, messages), events.context()) == {
        "batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    # S3 invokes asynchronously: raising makes Lambda retry the event.
    with pytest.raises(EventTriggerError, match="cannot connect"):
        handler(events.s3_event("uploads", "a.jpg", 1, "etag"), events.context())
    with pytest.raises(RuntimeUnavailableError):
        endpoints.app_client().trigger("lambda-ingest", {"items": []})


def test_s3_object_event_triggers_its_task(example, example_runtime):
    s3 = boto3.client("s3")
    s3.put_object(Bucket="uploads", Key="photos/cat 1.jpg", Body=b"\xff\xd8" + b"0" * 1000)
    head = s3.head_object(Bucket="uploads", Key="photos/cat 1.jpg")
    answer = invoke(example, events.s3_event("uploads", "photos/cat 1.jpg", head["ContentLength"], head["ETag"]))
    run = example_runtime.client().poll(answer["runs"][0], timeout=60)
    assert run.output == {"thumbnail": "thumbs/photos/cat 1.jpg", "from_bytes": 1002}


def test_scheduled_eventbridge_and_sns_events_trigger_their_tasks(example, example_runtime):
    client = example_runtime.client()
    tick = events.scheduled_event("nightly-cleanup")
    run = client.poll(invoke(example, tick)["runs"][0], timeout=60)
    assert run.output == {"cleaned_at": tick["time"]}

    paid = events.eventbridge_event("billing", "InvoicePaid", {"invoice_id": "inv_7"})
    assert client.poll(invoke(example, paid)["runs"][0], timeout=60).output == {"invoice": "inv_7"}

    alert = events.sns_event("alerts", {"name": "disk full", "severity": "critical"}, subject="ALARM")
    assert client.poll(invoke(example, alert)["runs"][0], timeout=60).output == {"paged": True, "alert": "disk full"}

    with pytest.raises(UnroutedEventError, match="no route"):
        invoke(example, events.scheduled_event("unknown-rule"))
