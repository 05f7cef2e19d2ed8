"""Lambda adapter: real API Gateway / Function URL / SQS / S3 / EventBridge / Scheduler / SNS / DynamoDB Streams /
Kinesis events, moto's S3, SQS, DynamoDB and Kinesis, a real runtime running the example's tasks to completion;
events the adapter does not route (CloudWatch Logs, Cognito, Kafka, ...) raise its own error."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from outlast import ConfigurationError, RuntimeUnavailableError
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

# The runtime and the example's tasks (which fetch offloaded payloads from S3) each have their own credentials.
example_runtime = example_runtime_fixture("lambda_app", extra_env=lambda: AWS_ENV, project_env=lambda: AWS_ENV)


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


def test_eventbridge_scheduler_schedules_trigger_like_rules_and_repeats_return_the_same_run(example, example_runtime):
    client = example_runtime.client()
    tick = events.scheduler_event("nightly-cleanup")  # the example's on_schedule("nightly-cleanup")
    answer = invoke(example, tick)
    run = client.poll(answer["runs"][0], timeout=60)
    assert run.output == {"cleaned_at": tick["time"]}
    assert run.idempotency_key == f"schedule:{tick['id']}:nightly-cleanup"
    assert invoke(example, tick) == answer  # Scheduler retried the invocation: the same run

    grouped = EventRoutes({"schedule:reports/weekly": "lambda-nightly-cleanup"})
    handler = outlast_lambda_handler(routes=grouped, endpoints=example.handler.endpoints)
    tick = events.scheduler_event("weekly", group="reports")
    assert client.poll(handler(tick, events.context())["runs"][0], timeout=60).output == {"cleaned_at": tick["time"]}
    with pytest.raises(UnroutedEventError, match=r"no route for schedule event from weekly \(aws.scheduler\)"):
        handler(events.scheduler_event("weekly", group="other"), events.context())


def _stream_records(table: str) -> tuple[str, list[dict]]:
    streams = boto3.client("dynamodbstreams")
    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return arn, streams.get_records(ShardIterator=iterator)["Records"]


def _table_with_stream(name: str) -> None:
    boto3.client("dynamodb").create_table(
        TableName=name, KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})


def test_dynamodb_stream_records_trigger_one_run_each_and_unrouted_tables_fail_their_records(example, example_runtime):
    _table_with_stream("orders")
    dynamodb = boto3.client("dynamodb")
    dynamodb.put_item(TableName="orders", Item={"order_id": {"S": "o-1"}, "status": {"S": "new"},
                                                "total": {"N": "12.5"}, "lines": {"L": [{"N": "2"}]}})
    dynamodb.update_item(TableName="orders", Key={"order_id": {"S": "o-1"}}, UpdateExpression="SET #s = :s",
                         ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":s": {"S": "paid"}})
    dynamodb.delete_item(TableName="orders", Key={"order_id": {"S": "o-1"}})
    arn, records = _stream_records("orders")
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]

    assert invoke(example, events.dynamodb_event(arn, records)) == {"batchItemFailures": []}
    client = example_runtime.client()
    runs = {run.idempotency_key: run for run in client.iter_runs(task="lambda-order-changed")}
    outputs = [client.poll(runs[f"dynamodb:orders:{r['eventID']}"].id, timeout=60).output for r in records]
    assert outputs == [{"order": "o-1", "event": "INSERT", "status": [None, "new"]},
                       {"order": "o-1", "event": "MODIFY", "status": ["new", "paid"]},
                       {"order": "o-1", "event": "REMOVE", "status": ["paid", None]}]
    first = runs[f"dynamodb:orders:{records[0]['eventID']}"]
    assert first.payload["new"] == {"order_id": "o-1", "status": "new", "total": 12.5, "lines": [2]}
    # The stream redelivered from the last checkpoint: the same runs.
    assert invoke(example, events.dynamodb_event(arn, records)) == {"batchItemFailures": []}
    assert len(list(client.iter_runs(task="lambda-order-changed"))) == 3

    _table_with_stream("audit")
    dynamodb.put_item(TableName="audit", Item={"order_id": {"S": "a-1"}})
    arn, records = _stream_records("audit")
    assert invoke(example, events.dynamodb_event(arn, records)) == {
        "batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]}


def test_kinesis_records_trigger_one_run_each_and_report_the_records_that_failed(example, example_runtime):
    kinesis = boto3.client("kinesis")
    kinesis.create_stream(StreamName="clicks", ShardCount=1)
    description = kinesis.describe_stream(StreamName="clicks")["StreamDescription"]
    arn, shard = description["StreamARN"], description["Shards"][0]["ShardId"]
    for data in ({"page": "/", "user": 1}, {"page": "/pricing", "user": 2}, {"oops": True}):
        kinesis.put_record(StreamName="clicks", Data=json.dumps(data).encode(), PartitionKey=str(data))
    iterator = kinesis.get_shard_iterator(StreamName="clicks", ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator)["Records"]
    event = events.kinesis_event(arn, shard, records)

    client = example_runtime.client()
    assert invoke(example, event) == {"batchItemFailures": []}  # the example's on_kinesis("clicks")
    runs = {run.idempotency_key: run for run in client.iter_runs(task="lambda-click")}
    first = client.poll(runs[f"kinesis:clicks:{shard}:{records[0]['SequenceNumber']}"].id, timeout=60)
    assert first.output == {"page": "/", "user": 1}

    strict = EventRoutes()

    @strict.kinesis(arn, task="lambda-click")  # by ARN; the payload function refuses records without a page
    def click(record: dict) -> dict:
        data = json.loads(base64.b64decode(record["kinesis"]["data"]))
        if "page" not in data:
            raise ValueError("not a click")
        return data

    handler = outlast_lambda_handler(routes=strict, endpoints=example.handler.endpoints)
    assert handler(event, events.context()) == {
        "batchItemFailures": [{"itemIdentifier": records[2]["SequenceNumber"]}]}


def test_s3_rules_filter_by_event_name_and_key_and_the_event_name_is_in_the_key(example, example_runtime):
    s3, client = boto3.client("s3"), example_runtime.client()
    s3.put_object(Bucket="uploads", Key="photos/dog.jpg", Body=b"\xff\xd8" + b"1" * 10)
    created = events.s3_event("uploads", "photos/dog.jpg", 12, s3.head_object(Bucket="uploads",
                                                                              Key="photos/dog.jpg")["ETag"])
    s3.delete_object(Bucket="uploads", Key="photos/dog.jpg")
    removed = events.s3_removed_event("uploads", "photos/dog.jpg")

    made = client.poll(invoke(example, created)["runs"][0], timeout=60)
    gone = client.poll(invoke(example, removed)["runs"][0], timeout=60)
    assert (made.task, made.output) == ("lambda-thumbnail", {"thumbnail": "thumbs/photos/dog.jpg", "from_bytes": 12})
    assert (gone.task, gone.output) == ("lambda-forget-thumbnail",
                                        {"removed": "thumbs/photos/dog.jpg", "because": "s3:ObjectRemoved:Delete"})
    assert ":photos/dog.jpg:s3:ObjectCreated:Put:" in made.idempotency_key
    assert ":photos/dog.jpg:s3:ObjectRemoved:Delete:" in gone.idempotency_key

    elsewhere = invoke(example, events.s3_event("uploads", "docs/readme.txt", 5, "etag"))  # outside photos/
    marker = invoke(example, events.s3_removed_event("uploads", "photos/dog.jpg", marker=True))
    assert elsewhere == {"runs": [], "ignored": 1}
    assert client.poll(marker["runs"][0], timeout=60).output["because"] == "s3:ObjectRemoved:DeleteMarkerCreated"
    with pytest.raises(ConfigurationError, match="s3:ObjectCreated"):
        EventRoutes().s3("uploads", task="lambda-thumbnail", events=["ObjectCreated:*"])


def test_s3_events_through_eventbridge_use_the_same_routes(example, example_runtime):
    client = example_runtime.client()
    created = events.s3_eventbridge_event("uploads", "photos/cat 2.jpg", size=2048)  # EventBridge keys: not encoded
    run = client.poll(invoke(example, created)["runs"][0], timeout=60)
    assert (run.task, run.output) == ("lambda-thumbnail", {"thumbnail": "thumbs/photos/cat 2.jpg", "from_bytes": 2048})
    assert ":photos/cat 2.jpg:s3:ObjectCreated:Put:" in run.idempotency_key

    deleted = events.s3_eventbridge_event("uploads", "photos/cat 2.jpg", "Object Deleted", "DeleteObject",
                                          size=None, deletion_type="Permanently Deleted")
    assert client.poll(invoke(example, deleted)["runs"][0], timeout=60).output == {
        "removed": "thumbs/photos/cat 2.jpg", "because": "s3:ObjectRemoved:Delete"}
    tagged = events.s3_eventbridge_event("uploads", "photos/cat 2.jpg", "Object Tags Added", "PutObjectTagging")
    assert invoke(example, tagged) == {"runs": [], "ignored": 1}
    with pytest.raises(UnroutedEventError, match="no route for s3 source 'other-bucket'"):
        invoke(example, events.s3_eventbridge_event("other-bucket", "a.txt"))
    api_call = events.eventbridge_event("aws.s3", "AWS API Call via CloudTrail", {"eventName": "PutBucketAcl"})
    with pytest.raises(UnroutedEventError, match=r"no route for eventbridge event from aws.s3"):
        invoke(example, api_call)  # not an object event: EventBridge routes (on_eventbridge("aws.s3", ...)) apply


@pytest.mark.parametrize(("event", "named"), [
    (events.awslogs_event("/aws/lambda/app", ["ERROR boom"]), r"CloudWatch Logs subscription event \(awslogs\)"),
    (events.cognito_event(), r"Cognito user pool trigger \(PreSignUp_SignUp\)"),
    (events.msk_event("orders"), r"Kafka batch \(aws:kafka\)"),
    ({"Records": [{"eventSource": "aws:codecommit", "eventName": "ReferenceChanges"}]}, "records from aws:codecommit"),
    ({"hello": "world"}, "event with hello"),
])
def test_events_the_adapter_does_not_route_raise_its_error_naming_what_arrived(example, event, named):
    with pytest.raises(UnroutedEventError, match=f"cannot route (an? )?{named}"):
        invoke(example, event)  # the example has an ASGI app: none of these reach Mangum
