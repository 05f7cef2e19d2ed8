"""Unit tests of the HTTP clients, against httpx.MockTransport (no runtime)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from outlast import _client, _runs, _tasks_api
from outlast._client import AsyncClient, Client, default_async_client, default_client, trigger_options
from outlast._config import from_env
from outlast._errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RuntimeUnavailableError,
)
from outlast.wire import BatchItem, Run, RunStatus, TriggerOptions

API = "http://runtime.test"
SECRET = "sk_test_123"

Handler = Callable[[httpx.Request], httpx.Response]


def run_json(run_id: str = "run_1", status: str = "COMPLETED", **fields: Any) -> dict[str, Any]:
    return {
        "id": run_id, "task": "email/send", "env": "dev", "status": status, "max_attempts": 3,
        "queue": "task/email/send", "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:01Z",
        **fields,
    }


class Recorder:
    """A MockTransport handler that records requests and answers with `respond`."""

    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def answer(status: int = 200, body: Any = None) -> Recorder:
    return Recorder(lambda request: httpx.Response(status, json=body))


def sync_client(handler: Handler, **kwargs: Any) -> Client:
    return Client(API, SECRET, transport=httpx.MockTransport(handler), **kwargs)


def async_client(handler: Handler, **kwargs: Any) -> AsyncClient:
    return AsyncClient(API, SECRET, transport=httpx.MockTransport(handler), **kwargs)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- requests -------------------------------------------------------------------------------------


def test_sends_bearer_auth_and_json() -> None:
    handler = answer(200, {"id": "run_1", "task": "email/send"})
    with sync_client(handler) as client:
        handle = client.trigger("email/send", {"to": "a@example.com"})

    request = handler.last
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("outlast-python")
    assert handle.id == "run_1" and handle.is_cached is False


def test_task_id_is_one_path_segment() -> None:
    handler = answer(200, {"id": "run_1", "task": "email/send"})
    with sync_client(handler) as client:
        client.trigger("email/send")
    assert handler.last.url.raw_path == b"/api/v1/tasks/email%2Fsend/trigger"


def test_trigger_body_carries_payload_and_options() -> None:
    handler = answer(200, {"id": "run_1", "task": "t", "is_cached": True})
    options = trigger_options(delay="5m", tags="vip", queue="emails", idempotency_key="k1", priority=None)
    with sync_client(handler) as client:
        handle = client.trigger("t", {"n": 1, "when": datetime(2024, 5, 1, tzinfo=UTC)}, options)

    sent = body(handler.last)
    assert sent["payload"] == {"n": 1, "when": "2024-05-01T00:00:00Z"}
    assert sent["options"]["delay"] == 300.0
    assert sent["options"]["tags"] == ["vip"]
    assert sent["options"]["queue"] == {"name": "emails", "concurrency_limit": None, "rate_limit": None}
    assert sent["options"]["idempotency_key"] == "k1"
    assert sent["options"]["priority"] == 0
    assert handle.is_cached is True


def test_payload_that_is_not_json_is_refused_before_sending() -> None:
    handler = answer(200, {})
    with sync_client(handler) as client, pytest.raises(InvalidRequestError) as info:
        client.trigger("t", {"f": object()})
    assert info.value.field == "payload"
    assert handler.requests == []


def test_timeouts_are_always_set() -> None:
    handler = answer(200, run_json())
    with sync_client(handler) as client:
        client.retrieve_run("run_1")
    assert handler.last.extensions["timeout"] == {"connect": 5.0, "read": 10.0, "write": 10.0, "pool": 10.0}

    with sync_client(handler, timeout=2) as client:
        client.retrieve_run("run_1")
    assert handler.last.extensions["timeout"]["connect"] == 2.0


def test_batch_trigger_body() -> None:
    handler = answer(200, {"runs": [{"id": "run_1", "task": "a"}, {"id": "run_2", "task": "b"}]})
    items = [BatchItem(task="a", payload=1), BatchItem(task="b", options=TriggerOptions(tags=["x"]))]
    with sync_client(handler) as client:
        batch = client.batch_trigger(items)

    assert handler.last.url.path == "/api/v1/tasks/batch-trigger"
    sent = body(handler.last)["items"]
    assert [(i["task"], i["payload"], i["options"]["tags"]) for i in sent] == [("a", 1, []), ("b", None, ["x"])]
    assert [r.id for r in batch.runs] == ["run_1", "run_2"]


def test_empty_batch_is_refused_before_sending() -> None:
    handler = answer(200, {})
    with sync_client(handler) as client, pytest.raises(InvalidRequestError) as info:
        client.batch_trigger([])
    assert info.value.field == "items"
    assert handler.requests == []


@pytest.mark.parametrize(
    ("call", "method", "path"),
    [
        (lambda c: c.retrieve_run("run_1"), "GET", "/api/v1/runs/run_1"),
        (lambda c: c.cancel_run("run_1"), "POST", "/api/v1/runs/run_1/cancel"),
        (lambda c: c.reschedule_run("run_1", "1h"), "POST", "/api/v1/runs/run_1/reschedule"),
    ],
)
def test_run_endpoints(call: Callable[[Client], Any], method: str, path: str) -> None:
    handler = answer(200, run_json())
    with sync_client(handler) as client:
        run = call(client)
    assert (handler.last.method, handler.last.url.path) == (method, path)
    assert isinstance(run, Run) and run.status is RunStatus.COMPLETED


def test_reschedule_sends_seconds_or_a_time() -> None:
    handler = answer(200, run_json(status="DELAYED"))
    with sync_client(handler) as client:
        client.reschedule_run("run_1", "1h30m")
        assert body(handler.last) == {"delay": 5400.0}
        soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)  # a delay is at most a year ahead
        client.reschedule_run("run_1", soon)
        assert body(handler.last) == {"delay": soon.isoformat().replace("+00:00", "Z")}
        with pytest.raises(InvalidRequestError) as info:
            client.reschedule_run("run_1", "soon")
    assert info.value.field == "delay"


def test_replay_and_events() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/replay"):
            return httpx.Response(200, json={"id": "run_2", "task": "email/send"})
        return httpx.Response(200, json=[
            {"id": 1, "run_id": "run_1", "time": "2024-05-01T12:00:00Z", "kind": "status", "message": "QUEUED"},
            {"id": 2, "run_id": "run_1", "time": "2024-05-01T12:00:01Z", "kind": "log", "level": "info",
             "attempt": 1, "message": "hello", "data": {"k": 1}},
        ])

    with sync_client(Recorder(respond)) as client:
        assert client.replay_run("run_1").id == "run_2"
        events = client.run_events("run_1")
    assert [(e.kind, e.message) for e in events] == [("status", "QUEUED"), ("log", "hello")]
    assert events[1].data == {"k": 1}


def test_empty_run_id_is_refused() -> None:
    handler = answer(200, {})
    with sync_client(handler) as client, pytest.raises(InvalidRequestError) as info:
        client.retrieve_run("")
    assert info.value.field == "run_id"
    assert handler.requests == []


def test_list_runs_query_params() -> None:
    handler = answer(200, {"data": [run_json()], "next_cursor": None})
    with sync_client(handler) as client:
        page = client.list_runs(
            status=["failed", RunStatus.CRASHED], task="email/send", tag=["a", "b"],
            created_after=datetime(2024, 5, 1, tzinfo=UTC), limit=10, cursor="c1",
        )

    params = handler.last.url.params
    assert params.get_list("status") == ["FAILED", "CRASHED"]
    assert params.get_list("task") == ["email/send"]
    assert params.get_list("tag") == ["a", "b"]
    assert params["created_after"] == "2024-05-01T00:00:00+00:00"
    assert "created_before" not in params
    assert (params["limit"], params["cursor"]) == ("10", "c1")
    assert [r.id for r in page.data] == ["run_1"] and page.next_cursor is None


def test_list_runs_rejects_unknown_status() -> None:
    handler = answer(200, {})
    with sync_client(handler) as client, pytest.raises(InvalidRequestError) as info:
        client.list_runs(status="DONE")
    assert info.value.field == "status"
    assert "COMPLETED" in str(info.value)


def paged(pages: int, per_page: int = 2) -> Recorder:
    """Answers page n (cursor "c<n>") with runs and a cursor to the next page, none after the last."""

    def respond(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("cursor", "c0")[1:])
        data = [run_json(f"run_{n}_{i}") for i in range(per_page)]
        next_cursor = f"c{n + 1}" if n + 1 < pages else None
        return httpx.Response(200, json={"data": data, "next_cursor": next_cursor})

    return Recorder(respond)


def test_iter_runs_follows_cursors() -> None:
    handler = paged(3)
    with sync_client(handler) as client:
        ids = [run.id for run in client.iter_runs(task="email/send", limit=2)]

    assert ids == ["run_0_0", "run_0_1", "run_1_0", "run_1_1", "run_2_0", "run_2_1"]
    assert [r.url.params.get("cursor") for r in handler.requests] == [None, "c1", "c2"]
    assert all(r.url.params["task"] == "email/send" for r in handler.requests)


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, AuthenticationError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (422, InvalidRequestError),
        (500, APIError),
        (429, APIError),
    ],
)
def test_error_statuses_map_to_exceptions(status: int, error_type: type[APIError]) -> None:
    field = "payload.to" if status == 422 else None
    error_body = {"error": "some_code", "message": f"went wrong ({status})", "field": field, "details": None}
    with sync_client(answer(status, error_body)) as client, pytest.raises(APIError) as info:
        client.retrieve_run("run_1")

    assert type(info.value) is error_type
    assert info.value.status_code == status
    assert str(info.value) == f"went wrong ({status})"
    assert info.value.field == field
    assert info.value.body["error"] == "some_code"


def test_error_without_error_body() -> None:
    handler = Recorder(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with sync_client(handler) as client, pytest.raises(APIError) as info:
        client.retrieve_run("run_1")
    assert info.value.status_code == 502
    assert "HTTP 502" in str(info.value) and "Bad Gateway" in str(info.value)


def test_unexpected_success_body_is_an_api_error() -> None:
    with sync_client(answer(200, {"hello": "world"})) as client, pytest.raises(APIError) as info:
        client.retrieve_run("run_1")
    assert "unexpected answer" in str(info.value)


def test_connection_refused_names_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with Client(url, SECRET, retry_for=1) as client, pytest.raises(RuntimeUnavailableError) as info:
        client.retrieve_run("run_1")
    assert url in str(info.value)
    assert "OUTLAST_API_URL" in str(info.value)


def test_timeout_is_runtime_unavailable() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with sync_client(Recorder(respond)) as client, pytest.raises(RuntimeUnavailableError) as info:
        client.trigger("t")
    assert API in str(info.value)
    assert "may still have taken effect" in str(info.value)


# --- poll ------------------------------------------------------------------------------------------


def test_poll_returns_the_final_run() -> None:
    statuses = iter(["QUEUED", "EXECUTING", "COMPLETED"])
    handler = Recorder(lambda request: httpx.Response(200, json=run_json(status=next(statuses))))
    with sync_client(handler) as client:
        run = client.poll("run_1", interval=0.001)
    assert run.ok and len(handler.requests) == 3


def test_poll_timeout_names_run_and_status() -> None:
    handler = answer(200, run_json(status="EXECUTING"))
    with sync_client(handler) as client, pytest.raises(TimeoutError) as info:
        client.poll("run_1", interval=0.01, timeout=0.05)
    assert "run_1" in str(info.value) and "EXECUTING" in str(info.value)
    assert 2 <= len(handler.requests) <= 10


# --- trigger_options ---------------------------------------------------------------------------------


def test_trigger_options_drops_nones_and_parses_durations() -> None:
    options = trigger_options(ttl="1h", max_duration=90, delay=None, machine=None, tags=["a", "a", "b"])
    assert options == TriggerOptions(ttl=3600, max_duration=90, tags=["a", "b"])


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
        ({"ttl": "forever"}, "ttl"),
        ({"machine": "huge"}, "machine"),
        ({"priority": 10**9}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_trigger_options_raise_invalid_request(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        trigger_options(**options)
    assert info.value.field == field
    assert field in str(info.value)


def test_too_many_tags_message() -> None:
    with pytest.raises(InvalidRequestError, match="at most 10 tags"):
        trigger_options(tags=[str(i) for i in range(11)])


# --- the async twin ----------------------------------------------------------------------------------


def test_async_twin_sends_the_same_requests() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith(("/trigger", "/replay")):
            return httpx.Response(200, json={"id": "run_1", "task": "t"})
        if path.endswith("/batch-trigger"):
            return httpx.Response(200, json={"runs": [{"id": "run_1", "task": "t"}]})
        if path.endswith("/events"):
            return httpx.Response(200, json=[])
        if path == "/api/v1/runs":
            return httpx.Response(200, json={"data": [run_json()]})
        return httpx.Response(200, json=run_json())

    options = trigger_options(tags=["x"], delay=5)
    items = [BatchItem(task="t", payload={"a": 1})]

    def calls(c: Any) -> list[Any]:
        return [
            c.trigger("t", {"a": 1}, options), c.batch_trigger(items), c.retrieve_run("run_1"),
            c.list_runs(status="QUEUED", tag="x", limit=5), c.run_events("run_1"), c.cancel_run("run_1"),
            c.replay_run("run_1"), c.reschedule_run("run_1", 30), c.poll("run_1"),
        ]

    sync_handler, async_handler = Recorder(respond), Recorder(respond)
    with sync_client(sync_handler) as client:
        sync_results = calls(client)

    async def main() -> list[Any]:
        async with async_client(async_handler) as client:
            return list(await asyncio.gather(*calls(client)))

    async_results = asyncio.run(main())

    def key(r: httpx.Request) -> tuple[Any, ...]:
        return r.method, str(r.url), r.content, r.headers["authorization"], r.extensions["timeout"]

    assert sorted(map(key, async_handler.requests)) == sorted(map(key, sync_handler.requests))
    assert async_results == sync_results


def test_async_iter_runs_follows_cursors() -> None:
    async def main() -> list[str]:
        async with async_client(paged(2)) as client:
            return [run.id async for run in client.iter_runs(limit=2)]

    assert asyncio.run(main()) == ["run_0_0", "run_0_1", "run_1_0", "run_1_1"]


def test_async_errors_and_poll_timeout() -> None:
    async def main() -> None:
        async with async_client(answer(404, {"error": "not_found", "message": "no run run_x"})) as client:
            with pytest.raises(NotFoundError, match="no run run_x"):
                await client.retrieve_run("run_x")
        async with async_client(answer(200, run_json(status="QUEUED"))) as client:
            with pytest.raises(TimeoutError, match="run_1 is still QUEUED"):
                await client.poll("run_1", interval=0.01, timeout=0.03)
        url = f"http://127.0.0.1:{closed_port()}"
        async with AsyncClient(url, SECRET, retry_for=1) as client:
            with pytest.raises(RuntimeUnavailableError, match=url):
                await client.retrieve_run("run_1")

    asyncio.run(main())


# --- settings and default clients --------------------------------------------------------------------


def test_missing_secret_key_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTLAST_SECRET_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="OUTLAST_SECRET_KEY"):
        Client()


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAST_API_URL", "https://outlast.example.com/")
    monkeypatch.setenv("OUTLAST_SECRET_KEY", "sk_env")
    monkeypatch.setenv("OUTLAST_TIMEOUT", "3")
    settings = from_env()
    assert (settings.api_url, settings.secret_key, settings.timeout) == ("https://outlast.example.com", "sk_env", 3.0)
    assert from_env("http://other:1", "sk_arg", 1).secret_key == "sk_arg"

    monkeypatch.setenv("OUTLAST_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="OUTLAST_TIMEOUT"):
        from_env()


def test_defaults_when_env_is_empty() -> None:
    settings = from_env(environ={})
    assert (settings.api_url, settings.secret_key, settings.timeout) == ("http://127.0.0.1:7070", None, 10.0)


def test_default_clients_are_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAST_SECRET_KEY", "sk_env")
    monkeypatch.setattr(_client, "_default", None)
    monkeypatch.setattr(_client, "_async_defaults", type(_client._async_defaults)())
    client = default_client()
    assert default_client() is client
    assert client.requests.headers["Authorization"] == "Bearer sk_env"
    client.close()

    async def pair() -> tuple[AsyncClient, AsyncClient]:
        return default_async_client(), default_async_client()

    first, again = asyncio.run(pair())
    other, _ = asyncio.run(pair())
    assert first is again and first is not other


# --- runs and tasks namespaces --------------------------------------------------------------------------


def test_tasks_batch_trigger_item_forms() -> None:
    handler = answer(200, {"runs": []})
    with sync_client(handler) as client:
        _tasks_api.batch_trigger(
            "t", [{"x": 1}, {"payload": {"x": 2}, "options": {"tags": "vip", "delay": None}}, 3], client=client
        )
    sent = body(handler.last)["items"]
    assert [(i["task"], i["payload"], i["options"]["tags"]) for i in sent] == [
        ("t", {"x": 1}, []), ("t", {"x": 2}, ["vip"]), ("t", 3, []),
    ]


def test_tasks_batch_trigger_many_names_the_bad_item() -> None:
    handler = answer(200, {"runs": []})
    items = [{"task": "a", "payload": 1}, {"task": "b", "options": {"tags": [str(i) for i in range(11)]}}]
    with sync_client(handler) as client, pytest.raises(InvalidRequestError) as info:
        _tasks_api.batch_trigger_many(items, client=client)
    assert info.value.field == "items.1.options.tags"
    assert handler.requests == []


def test_tasks_trigger_and_runs_namespace_use_the_given_client() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/trigger"):
            return httpx.Response(200, json={"id": "run_1", "task": "t"})
        return httpx.Response(200, json=run_json())

    handler = Recorder(respond)
    with sync_client(handler) as client:
        assert _tasks_api.trigger("t", {"a": 1}, client=client, tags=["x"], ttl="10m").id == "run_1"
        assert body(handler.last)["options"]["ttl"] == 600.0
        assert _runs.retrieve("run_1", client=client).id == "run_1"

    async def main() -> None:
        async with async_client(Recorder(respond)) as aclient:
            assert (await _tasks_api.atrigger("t", client=aclient)).id == "run_1"
            assert (await _runs.apoll("run_1", client=aclient)).ok

    asyncio.run(main())
