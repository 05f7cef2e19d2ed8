"""Flask adapter: the example app's routes trigger real runs on a real runtime, which complete."""

from __future__ import annotations

import json

import pytest
from flask import Flask, current_app

from outlast import RuntimeUnavailableError
from outlast._adapter import sign_webhook
from outlast.adapters.flask import Outlast
from tests.adapters._support import app_env, down_url, example_runtime_fixture, load_example
from tests.conftest import SECRET_KEY

example_runtime = example_runtime_fixture("flask_app")


@pytest.fixture(scope="module")
def example(example_runtime):
    return load_example("flask_app", "app", app_env(example_runtime, OUTLAST_WEBHOOK_SECRET="whsec_flask"))


@pytest.fixture
def http(example):
    return example.app.test_client()


def test_route_triggers_a_run_that_completes_with_the_request_trace(http, example_runtime):
    answer = http.post("/reports", json={"account": "acme", "scale": 2}, headers={"x-request-id": "req-flask-1"})
    assert answer.status_code == 202, answer.text
    run = example_runtime.client().poll(answer.json["run_id"], timeout=60)
    assert run.status == "COMPLETED", run.error
    assert run.output == {"account": "acme", "rows": [{"month": 12, "total": 24}]}
    assert run.tags == ["reports"]
    assert run.metadata["trace_id"] == "req-flask-1"
    assert run.metadata["rows"] == 12


def test_extension_state_is_on_current_app(example, example_runtime):
    with example.app.app_context():
        state = current_app.extensions["outlast"]
        handle = state.client.trigger("flask-build-report", {"account": "by-id"})
    run = example_runtime.client().poll(handle.id, timeout=60)
    assert run.output["account"] == "by-id"


def test_browser_streams_its_run_with_the_public_token(http):
    started = http.post("/reports", json={"account": "stream"}).json
    answer = http.get(f"/outlast/runs/{started['run_id']}/stream?token={started['token']}")
    assert answer.status_code == 200
    assert answer.mimetype == "text/event-stream"
    data = [json.loads(line[6:]) for line in answer.get_data(as_text=True).splitlines() if line.startswith("data: ")]
    assert data[-1]["status"] == "COMPLETED"
    assert data[-1]["output"]["account"] == "stream"

    shown = http.get(f"/outlast/runs/{started['run_id']}", headers={"Authorization": f"Bearer {started['token']}"})
    assert shown.status_code == 200 and shown.json["status"] == "COMPLETED"
    assert http.get(f"/outlast/runs/{started['run_id']}").status_code == 401


def test_signed_webhook_and_a_tampered_one(http, example_runtime):
    body = json.dumps({"payment_id": "pay_1", "status": "captured"}).encode()
    headers = sign_webhook("whsec_flask", body)
    answer = http.post("/outlast/webhooks/payments", data=body, headers=headers)
    assert answer.status_code == 202, answer.text
    assert example_runtime.client().poll(answer.json["run_id"], timeout=60).output == {
        "payment": "pay_1", "status": "captured"}

    tampered = body.replace(b"captured", b"refunded")
    refused = http.post("/outlast/webhooks/payments", data=tampered, headers=sign_webhook("whsec_flask", body))
    assert refused.status_code == 401 and refused.json["field"] == "outlast-webhook-signature"


def test_health(http):
    answer = http.get("/outlast/health")
    assert answer.status_code == 200, answer.text
    assert answer.json["tasks"]["flask-build-report"]["deployed"] is True


def test_config_keys_and_runtime_down_is_a_clear_error():
    app = Flask("down")
    app.config.update(OUTLAST_API_URL=down_url(), OUTLAST_SECRET_KEY=SECRET_KEY, OUTLAST_TIMEOUT=3,
                      OUTLAST_PREFIX="/jobs")
    outlast = Outlast(app)
    seen: list[BaseException] = []

    @app.post("/go")
    def go():
        try:
            return {"id": outlast.client.trigger("flask-build-report", {"account": "x"}).id}
        except RuntimeUnavailableError as exc:
            seen.append(exc)
            raise

    http = app.test_client()
    answer = http.post("/go")
    assert answer.status_code == 503 and answer.json["error"] == "runtime_unavailable"
    assert isinstance(seen[0], RuntimeUnavailableError)
    assert app.extensions["outlast"].endpoints.settings.client.api_url == app.config["OUTLAST_API_URL"]
    assert http.get("/jobs/health").status_code == 503  # mounted at OUTLAST_PREFIX
