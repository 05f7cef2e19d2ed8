"""Issue 16's inputs that caused 500s (or were stored first): each is a 422 naming the field, nothing stored.

On both stores: PostgreSQL refuses NUL and NaN that SQLite would take, so the edge refuses them for both.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SECRET_KEY
from tests.e2e._shared import shared_runtime_fixture

shared_runtime = shared_runtime_fixture()


@pytest.fixture
def http(shared_runtime) -> httpx.Client:
    with httpx.Client(base_url=shared_runtime.url + "/api/v1", timeout=60,
                      headers={"Authorization": f"Bearer {SECRET_KEY}"}) as http:
        yield http


def _newest(http: httpx.Client) -> str | None:
    data = http.get("/runs", params={"limit": 1}).json()["data"]
    return data[0]["id"] if data else None


def _refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and body.get("field") == field, body


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("body", "field"), [
    (b'{"options": {"delay": 1e12}}', "options.delay"),
    (b'{"options": {"delay": 1e400}}', "options.delay"),
    (b'{"options": {"delay": "99999999999d"}}', "options.delay"),
    (b'{"options": {"delay": NaN}}', "options.delay"),
    (b'{"options": {"delay": "9999-12-31T23:59:59Z"}}', "options.delay"),
    (b'{"options": {"ttl": Infinity}}', "options.ttl"),
    (b'{"options": {"max_duration": 1e400}}', "options.max_duration"),
    (b'{"options": {"idempotency_key_ttl": 1e300}}', "options.idempotency_key_ttl"),
    (b'{"payload": {"x": NaN}}', "payload.x"),
    (b'{"payload": ["ok", "\\ud800"]}', "payload.1"),
    (b'{"payload": "a\\u0000b"}', "payload"),
    (b'{"options": {"tags": ["a\\u0000"]}}', "options.tags.0"),
    (b'{"options": {"idempotency_key": "k\\u0000"}}', "options.idempotency_key"),
    (b'{"options": {"queue": "q\\u0000"}}', "options.queue"),
    (b'{"payload": ' + b"[" * 1000 + b"]" * 1000 + b"}", "body"),  # too deep for json: the body is named
    (b'{"payload": ' + b"[" * 150 + b"]" * 150 + b"}", "payload." + ".".join(["0"] * 100)),
    (b'{"payload": "\xff\xfe"}', "body"),
])
def test_bad_trigger_values_are_422_and_store_nothing(http, body, field):
    newest = _newest(http)
    _refused(http.post("/tasks/echo/trigger", content=body, headers=JSON), field)
    assert _newest(http) == newest


def test_bad_token_reschedule_events_and_worker_values_are_422(http):
    for timeout in (b"3.64e16", b"Infinity", b"NaN", b"1e400"):
        _refused(http.post("/waitpoints/tokens", content=b'{"timeout": ' + timeout + b"}", headers=JSON), "timeout")
    _refused(http.post("/waitpoints/tokens", json={"tags": ["t\x00"]}), "tags.0")
    _refused(http.post("/waitpoints/tokens/wp_x/callback/s\u00e9cret", json={}), "secret")
    _refused(http.get("/runs/run_x/events", params={"after": "-1e20"}), "after")
    _refused(http.get("/runs/run_x/events", params={"after": str(2**64)}), "after")
    _refused(http.post("/runs/run_x/reschedule", content=b'{"delay": NaN}', headers=JSON), "delay")
    _refused(http.get("/runs", params={"cursor": "a\x00"}), "cursor")
    _refused(http.get("/runs", params={"task": "t\x00"}), "task")
    _refused(http.get("/runs", params={"created_after": "0001-01-01T00:00:00Z"}), "created_after")
    _refused(http.get("/runs/" + "r" * 2000), "run_id")
    completion = {"run_id": "run_x", "attempt": 2**63, "outcome": "ok"}
    _refused(http.post("/worker/report", json={"completions": [completion]}), "completions.0.attempt")
    registration = {"node_id": "n" * 10_000, "version": "v1", "tasks": []}
    _refused(http.post("/worker/register", json=registration), "node_id")
    _refused(http.post("/worker/register", json={"node_id": "n", "version": "v" * 1000, "tasks": []}), "version")
    # Still served: the runs API and a good trigger.
    assert http.get("/runs").status_code == 200
    assert http.post("/tasks/echo/trigger", json={"payload": "é ok", "options": {"delay": "1h"}}).status_code == 200
