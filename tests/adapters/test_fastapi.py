"""FastAPI adapter: the example app's routes trigger real runs on a real runtime, which complete."""

from __future__ import annotations

import json

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from outlast import RuntimeUnavailableError
from outlast._adapter import sign_webhook
from outlast.adapters.fastapi import Outlast, OutlastClient
from tests.adapters._support import app_env, down_url, example_runtime_fixture, load_example

example_runtime = example_runtime_fixture("fastapi_app")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def example(example_runtime):
    return load_example("fastapi_app", "main", app_env(example_runtime, OUTLAST_WEBHOOK_SECRET="whsec_test"))


@pytest.fixture
def http(example):
    with TestClient(example.app) as client:  # runs the lifespan: the app's client opens and closes with it
        yield client


def sse_events(response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


def test_async_route_triggers_a_run_that_completes_with_the_request_trace(http, example_runtime):
    answer = http.post("/signup", json={"email": "ada@example.com", "name": "Ada"},
                       headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 202, answer.text
    run = example_runtime.client().poll(answer.json()["run_id"], timeout=60)
    assert run.status == "COMPLETED", run.error
    assert run.output == {"to": "ada@example.com", "subject": "Welcome, Ada!"}
    assert run.tags == ["user:ada@example.com"]
    assert run.metadata["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert run.metadata["step"] == "sent"


def test_sync_route_triggers_by_task_id_with_the_request_id(http, example_runtime):
    answer = http.post("/signup-sync", json={"email": "bo@example.com", "name": "Bo"},
                       headers={"x-request-id": "req-sync-1"})
    assert answer.status_code == 202, answer.text
    run = example_runtime.client().poll(answer.json()["run_id"], timeout=60)
    assert run.status == "COMPLETED", run.error
    assert run.output["subject"] == "Welcome, Bo!"
    assert run.metadata["trace_id"] == "req-sync-1"


def test_browser_reads_and_streams_its_run_with_the_public_token(http, example_runtime):
    started = http.post("/signup", json={"email": "cy@example.com", "name": "Cy"}).json()
    run_id, token = started["run_id"], started["token"]
    assert token.startswith("olpt_")

    with http.stream("GET", started["stream"], params={"token": token}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = sse_events(stream)
    assert events and all(name == "run" for name, _ in events)
    assert events[-1][1]["status"] == "COMPLETED"
    assert events[-1][1]["output"] == {"to": "cy@example.com", "subject": "Welcome, Cy!"}

    shown = http.get(f"/outlast/runs/{run_id}", headers={"Authorization": f"Bearer {token}"})
    assert shown.status_code == 200
    assert shown.json()["id"] == run_id and shown.json()["status"] == "COMPLETED"

    missing = http.get(f"/outlast/runs/{run_id}")
    assert missing.status_code == 401 and missing.json()["field"] == "token"
    secret = http.get(f"/outlast/runs/{run_id}", params={"token": "ol_dev_test_0123456789abcdef"})
    assert secret.status_code == 401 and "not a public access token" in secret.json()["message"]

    other = http.post("/signup", json={"email": "di@example.com", "name": "Di"}).json()
    refused = http.get(f"/outlast/runs/{other['run_id']}", params={"token": token})
    assert refused.status_code == 401
    assert "does not cover" in refused.json()["message"]


def test_signed_webhook_triggers_its_task(http, example_runtime):
    body = json.dumps({"order_id": 7, "type": "paid"}).encode()
    answer = http.post("/outlast/webhooks/orders", content=body, headers=sign_webhook("whsec_test", body))
    assert answer.status_code == 202, answer.text
    run = example_runtime.client().poll(answer.json()["run_id"], timeout=60)
    assert run.output == {"order": 7, "event": "paid"}


def test_health_reports_runtime_key_and_declared_tasks(http):
    answer = http.get("/outlast/health")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ok" and body["runtime_reachable"] and body["key_valid"]
    assert body["tasks"]["fastapi-welcome-email"]["deployed"] is True
    assert body["tasks"]["fastapi-order-event"]["deployed"] is True


def test_health_names_tasks_missing_from_the_runtime_and_a_bad_key(example_runtime):
    app = FastAPI()
    Outlast(app, api_url=example_runtime.url, secret_key="ol_dev_test_0123456789abcdef",
            tasks=["fastapi-welcome-email", "not-deployed"])
    with TestClient(app) as http:
        answer = http.get("/outlast/health")
    assert answer.status_code == 503
    assert answer.json()["tasks"]["not-deployed"]["deployed"] is False
    assert "not-deployed" in answer.json()["problems"][0]

    app = FastAPI()
    Outlast(app, api_url=example_runtime.url, secret_key="ol_dev_wrong_key_000000000")
    with TestClient(app) as http:
        answer = http.get("/outlast/health")
    assert answer.status_code == 503
    assert answer.json()["runtime_reachable"] is True and answer.json()["key_valid"] is False


def test_runtime_down_is_a_clear_error_not_a_hang():
    app = FastAPI()
    outlast = Outlast(app, api_url=down_url(), secret_key="ol_dev_test_0123456789abcdef", timeout=3)
    seen: list[BaseException] = []

    @app.post("/go")
    async def go(client: OutlastClient = Depends(outlast.client)):  # noqa: B008 - Annotated would need a global
        try:
            return await client.trigger("fastapi-welcome-email", {"email": "x", "name": "y"})
        except RuntimeUnavailableError as exc:
            seen.append(exc)
            raise

    with TestClient(app) as http:
        answer = http.post("/go")
        health = http.get("/outlast/health")
    assert answer.status_code == 503
    assert answer.json()["error"] == "runtime_unavailable"
    assert isinstance(seen[0], RuntimeUnavailableError) and "cannot connect" in str(seen[0])
    assert health.status_code == 503 and health.json()["runtime_reachable"] is False
