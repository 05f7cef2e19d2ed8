"""Bad input is refused with a clear status and body, and never creates a run.

Every error answer is `{"error", "message", "field"}`: 404 unknown task, 422 malformed or
ill-typed input (and payloads failing a schema_task's schema), 413 payload over the limit, 401
missing or wrong key. A key of one environment never sees another's runs.
"""

from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel

from outlast import (
    AuthenticationError,
    Client,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RunStatus,
    Task,
    tasks,
)
from tests.conftest import SECRET_KEY
from tests.e2e._shared import CountingTransport, prod_key, shared_runtime_fixture

shared_runtime = shared_runtime_fixture()
CLOSED = {"name": "closed", "concurrency_limit": 0}  # never claimed: its runs stay QUEUED
DEFAULT_LIMIT = 10 * 1024 * 1024


class Order(BaseModel):  # the schema of the runtime's "place-order" task
    order_id: int
    email: str


@pytest.fixture
def client(shared_runtime) -> Client:
    return shared_runtime.client()


@pytest.fixture
def http(shared_runtime) -> httpx.Client:
    with httpx.Client(base_url=shared_runtime.url + "/api/v1", timeout=60,
                      headers={"Authorization": f"Bearer {SECRET_KEY}"}) as http:
        yield http


def _newest(client: Client) -> str | None:
    page = client.list_runs(limit=1)
    return page.data[0].id if page.data else None


def _error(response: httpx.Response, status: int, error: str, field: str | None) -> str:
    """Check an error answer's status and body; returns its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert body.get("field") == field, body
    assert body["message"], body
    return body["message"]


def test_unknown_task_is_404_naming_it(http, client):
    newest = _newest(client)
    message = _error(http.post("/tasks/no-such-task/trigger", json={"payload": 1}), 404, "task_not_found", "task")
    assert "no-such-task" in message

    with pytest.raises(NotFoundError, match="no-such-task") as raised:
        tasks.trigger("no-such-task", 1, client=client)
    assert raised.value.status_code == 404 and raised.value.field == "task"
    with pytest.raises(NotFoundError, match="not-deployed"):
        Task(lambda payload: None, id="not-deployed").trigger(1, client=client)

    # One unknown task refuses the whole batch.
    batch = {"items": [{"task": "echo", "payload": 1}, {"task": "missing-too", "payload": 2}]}
    message = _error(http.post("/tasks/batch-trigger", json=batch), 404, "task_not_found", "items.1.task")
    assert "missing-too" in message
    with pytest.raises(NotFoundError, match="missing-too"):
        tasks.batch_trigger_many(batch["items"], client=client)
    assert _newest(client) == newest


def test_malformed_json_is_422(http, client):
    newest = _newest(client)
    headers = {"Content-Type": "application/json"}
    message = _error(http.post("/tasks/echo/trigger", content=b'{"payload": 1,', headers=headers),
                     422, "invalid_request", "body")
    assert "JSON" in message
    _error(http.post("/tasks/echo/trigger", content=b"[1, 2]", headers=headers), 422, "invalid_request", "body")
    _error(http.post("/tasks/echo/trigger"), 422, "invalid_request", "body")
    _error(http.post("/tasks/batch-trigger", content=b"{items: []}", headers=headers),
           422, "invalid_request", "body")
    assert _newest(client) == newest


@pytest.mark.parametrize(("options", "field"), [
    ({"priority": "high"}, "options.priority"),
    ({"tags": [f"t{i}" for i in range(11)]}, "options.tags"),
    ({"tags": "not-a-list"}, "options.tags"),
    ({"delay": "soon"}, "options.delay"),
    ({"ttl": -5}, "options.ttl"),
    ({"max_attempts": 0}, "options.max_attempts"),
    ({"machine": "gigantic"}, "options.machine"),
    ({"queue": {"name": "q", "concurrency_limit": -1}}, "options.queue.concurrency_limit"),
    ({"idempotency_key": ""}, "options.idempotency_key"),
    ({"metadata": [1, 2]}, "options.metadata"),
    ({"no_such_option": 1}, "options.no_such_option"),
])
def test_wrong_types_are_422_naming_the_field(http, client, options, field):
    newest = _newest(client)
    response = http.post("/tasks/echo/trigger", json={"payload": 1, "options": options})
    message = _error(response, 422, "invalid_request", field)
    assert message.startswith(field)
    assert response.json()["details"][0]["field"] == field
    # The same option in a batch names the item.
    batch = {"items": [{"task": "echo", "payload": 1}, {"task": "echo", "payload": 2, "options": options}]}
    _error(http.post("/tasks/batch-trigger", json=batch), 422, "invalid_request", "items.1." + field)
    assert _newest(client) == newest


def test_other_invalid_requests_are_422(shared_runtime, http, client):
    newest = _newest(client)
    too_many = {"items": [{"task": "noop", "payload": i} for i in range(1001)]}
    assert "1000" in _error(http.post("/tasks/batch-trigger", json=too_many), 422, "invalid_request", "items")
    _error(http.post("/tasks/batch-trigger", json={"items": []}), 422, "invalid_request", "items")
    _error(http.post("/tasks/batch-trigger", json={"items": [{"payload": 1}]}), 422, "invalid_request",
           "items.0.task")
    _error(http.post("/tasks/echo/trigger", json={"payload": 1, "extra": 2}), 422, "invalid_request", "extra")
    assert _newest(client) == newest

    assert _error(http.get("/runs", params={"status": "DONE"}), 422, "invalid_request", "status.0")
    _error(http.get("/runs", params={"limit": 0}), 422, "invalid_request", "limit")
    _error(http.get("/runs", params={"created_after": "yesterday"}), 422, "invalid_request", "created_after")
    _error(http.post("/runs/run_x/reschedule", json={"delay": "whenever"}), 422, "invalid_request", "delay")

    # The SDK refuses the same input before sending anything.
    transport = CountingTransport()
    with Client(api_url=shared_runtime.url, secret_key=SECRET_KEY, transport=transport) as counted:
        with pytest.raises(InvalidRequestError) as raised:
            tasks.trigger("echo", 1, client=counted, tags=[f"t{i}" for i in range(11)])
        assert raised.value.field == "tags" and "10" in str(raised.value)
        with pytest.raises(InvalidRequestError) as raised:
            tasks.trigger("echo", 1, client=counted, delay="soon")
        assert raised.value.field == "delay"
        with pytest.raises(InvalidRequestError) as raised:
            tasks.trigger("echo", object(), client=counted)
        assert raised.value.field == "payload"
        with pytest.raises(InvalidRequestError) as raised:
            tasks.batch_trigger("noop", list(range(1001)), client=counted)
        assert raised.value.field == "items"
        with pytest.raises(InvalidRequestError, match="status"):
            counted.list_runs(status="DONE")
    assert transport.requests == []


def test_schema_task_payload_is_validated_by_the_runtime(http, client):
    newest = _newest(client)
    response = http.post("/tasks/place-order/trigger", json={"payload": {"order_id": "seven", "email": "a@b.c"}})
    assert "order_id" in _error(response, 422, "invalid_payload", "payload.order_id")
    response = http.post("/tasks/place-order/trigger", json={"payload": {"order_id": 7}})
    assert "email" in _error(response, 422, "invalid_payload", "payload.email")
    response = http.post("/tasks/place-order/trigger", json={"payload": None})
    _error(response, 422, "invalid_payload", "payload")
    batch = {"items": [{"task": "place-order", "payload": {"order_id": 1, "email": "a@b.c"}},
                       {"task": "place-order", "payload": {"order_id": 2}}]}
    _error(http.post("/tasks/batch-trigger", json=batch), 422, "invalid_payload", "items.1.payload.email")
    # By id, the SDK cannot check the payload: the runtime's 422 reaches the caller.
    with pytest.raises(InvalidRequestError) as raised:
        tasks.trigger("place-order", {"order_id": "seven", "email": "a@b.c"}, client=client)
    assert raised.value.status_code == 422 and raised.value.field == "payload.order_id"
    assert _newest(client) == newest

    good = tasks.trigger("place-order", {"order_id": 7, "email": "a@b.c"}, client=client)
    run = client.poll(good.id, interval=0.1, timeout=30)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {"order_id": 7, "type": "Order"}


def test_schema_task_payload_is_validated_before_any_request(shared_runtime):
    transport = CountingTransport()
    # Not a task of the runtime: were the payload sent, the answer would be 404, not a validation error.
    local = Task(lambda payload: payload, id="local-only-order", payload_model=Order)
    with Client(api_url=shared_runtime.url, secret_key=SECRET_KEY, transport=transport) as counted:
        with pytest.raises(InvalidRequestError) as raised:
            local.trigger({"order_id": "seven", "email": "a@b.c"}, client=counted)
        assert raised.value.field == "payload.order_id" and "local-only-order" in str(raised.value)
        with pytest.raises(InvalidRequestError) as raised:
            local.trigger({"order_id": 7}, client=counted)
        assert raised.value.field == "payload.email"
        with pytest.raises(InvalidRequestError):
            local.batch_trigger([{"order_id": 1, "email": "a@b.c"}, {"order_id": "x"}], client=counted)
        assert transport.requests == []

        with pytest.raises(NotFoundError):  # a valid payload is sent
            local.trigger({"order_id": 7, "email": "a@b.c"}, client=counted)
        assert len(transport.requests) == 1

        place_order = Task(lambda payload: payload, id="place-order", payload_model=Order)
        handle = place_order.trigger(Order(order_id=8, email="x@y.z"), client=counted)
        run = counted.poll(handle.id, interval=0.1, timeout=30)
    assert run.payload == {"order_id": 8, "email": "x@y.z"}
    assert run.output == {"order_id": 8, "type": "Order"}


def test_missing_or_invalid_key_is_401(shared_runtime, http):
    base = shared_runtime.url + "/api/v1"
    for headers in ({}, {"Authorization": "Bearer ol_dev_not_the_key_0000000"}, {"Authorization": SECRET_KEY},
                    {"Authorization": f"Basic {SECRET_KEY}"}, {"Authorization": "Bearer"}):
        for method, path in [("POST", "/tasks/echo/trigger"), ("POST", "/tasks/batch-trigger"), ("GET", "/runs"),
                             ("GET", "/runs/run_x"), ("POST", "/runs/run_x/cancel"), ("GET", "/tasks")]:
            response = httpx.request(method, base + path, headers=headers, json={"payload": 1})
            _error(response, 401, "unauthorized", "authorization")

    with Client(api_url=shared_runtime.url, secret_key="ol_dev_not_the_key_0000000") as wrong:
        with pytest.raises(AuthenticationError) as raised:
            tasks.trigger("echo", 1, client=wrong)
        assert raised.value.status_code == 401
    with pytest.raises(ConfigurationError, match="OUTLAST_SECRET_KEY"):
        Client(api_url=shared_runtime.url, secret_key="")
    assert http.get("/runs").status_code == 200  # the right key still works


def test_a_key_sees_only_its_own_environment(shared_runtime, client):
    prod = shared_runtime.client(prod_key(shared_runtime))
    dev_run = tasks.trigger("echo", "dev", client=client, tags=["env-check"], idempotency_key="same-key")
    dev_delayed = tasks.trigger("echo", "dev later", client=client, tags=["env-check"], delay="1h")
    prod_run = tasks.trigger("echo", "prod", client=prod, tags=["env-check"], idempotency_key="same-key")
    assert prod_run.id != dev_run.id and not prod_run.is_cached

    assert client.poll(dev_run.id, interval=0.1, timeout=30).env == "dev"
    run = prod.poll(prod_run.id, interval=0.1, timeout=30)
    assert run.env == "prod" and run.status is RunStatus.COMPLETED and run.output["payload"] == "prod"

    assert [r.id for r in prod.list_runs(tag="env-check").data] == [prod_run.id]
    assert {r.id for r in client.list_runs(tag="env-check").data} == {dev_run.id, dev_delayed.id}
    assert dev_run.id not in {r.id for r in prod.iter_runs()}
    for run_id in (dev_run.id, dev_delayed.id):
        for call in (prod.retrieve_run, prod.run_events, prod.cancel_run, prod.replay_run,
                     lambda run_id: prod.reschedule_run(run_id, 0)):
            with pytest.raises(NotFoundError):
                call(run_id)
    for call in (client.retrieve_run, client.cancel_run, client.replay_run):
        with pytest.raises(NotFoundError):
            call(prod_run.id)

    # Nothing prod tried changed dev's runs.
    assert client.retrieve_run(dev_delayed.id).status is RunStatus.DELAYED
    assert client.retrieve_run(dev_run.id).status is RunStatus.COMPLETED
    assert [r.id for r in prod.list_runs(tag="env-check").data] == [prod_run.id]
    client.cancel_run(dev_delayed.id)


def test_default_payload_limit_is_10_mb(http, client):
    newest = _newest(client)
    # A JSON string payload's size is its length plus the two quotes.
    over = http.post("/tasks/echo/trigger", json={"payload": "x" * (DEFAULT_LIMIT - 1)})
    message = _error(over, 413, "payload_too_large", "payload")
    assert str(DEFAULT_LIMIT) in message
    much_over = http.post("/tasks/echo/trigger", json={"payload": "x" * (DEFAULT_LIMIT + 200_000)})
    assert str(DEFAULT_LIMIT) in _error(much_over, 413, "payload_too_large", "payload")
    with pytest.raises(PayloadTooLargeError, match=str(DEFAULT_LIMIT)) as raised:
        tasks.trigger("echo", "x" * DEFAULT_LIMIT, client=client)
    assert raised.value.status_code == 413 and raised.value.field == "payload"
    assert _newest(client) == newest

    at_limit = tasks.trigger("noop", "x" * (DEFAULT_LIMIT - 2), client=client, queue=CLOSED)
    assert len(client.retrieve_run(at_limit.id).payload) == DEFAULT_LIMIT - 2
    client.cancel_run(at_limit.id)


def test_payload_limit_is_configurable(make_runtime):
    runtime = make_runtime(extra_env={"OUTLAST_MAX_PAYLOAD_BYTES": "2000"})
    client = runtime.client()
    base = runtime.url + "/api/v1"
    headers = {"Authorization": f"Bearer {SECRET_KEY}"}

    ok = tasks.trigger("echo", "x" * 1998, client=client)
    assert client.poll(ok.id, interval=0.1, timeout=30).status is RunStatus.COMPLETED

    message = _error(httpx.post(base + "/tasks/echo/trigger", headers=headers, json={"payload": "x" * 1999}),
                     413, "payload_too_large", "payload")
    assert "2000" in message and "2001" in message
    # A body far over the limit is refused before it is read, with the same limit in the message.
    huge = httpx.post(base + "/tasks/echo/trigger", headers=headers, json={"payload": "x" * 500_000})
    assert "2000" in _error(huge, 413, "payload_too_large", "payload")

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        yield b'{"payload": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    streamed = httpx.post(base + "/tasks/echo/trigger", content=chunks(),
                          headers={**headers, "Content-Type": "application/json"})
    assert "2000" in _error(streamed, 413, "payload_too_large", "payload")

    batch = {"items": [{"task": "echo", "payload": "small"}, {"task": "echo", "payload": "x" * 3000}]}
    message = _error(httpx.post(base + "/tasks/batch-trigger", headers=headers, json=batch),
                     413, "payload_too_large", "items.1.payload")
    assert "2000" in message
    with pytest.raises(PayloadTooLargeError, match="2000"):
        tasks.trigger("echo", "x" * 5000, client=client)
    assert [r.id for r in client.list_runs().data] == [ok.id]
