"""Signed inbound webhooks (checked once, in the adapter core), through a real app and a real runtime."""

from __future__ import annotations

import json
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from outlast._adapter import AdapterRequest, WebhookSignatureError, sign_webhook, verify_signature
from outlast.adapters.fastapi import Outlast
from tests.adapters._support import project_runtime_fixture
from tests.conftest import PROJECTS, SECRET_KEY

runtime = project_runtime_fixture(PROJECTS / "basic")
NEW, OLD = "whsec_new_key", "whsec_old_key"
SIGNATURE, TIMESTAMP = "outlast-webhook-signature", "outlast-webhook-timestamp"


@pytest.fixture(scope="module")
def http(runtime):
    app = FastAPI()
    outlast = Outlast(app, api_url=runtime.url, secret_key=SECRET_KEY, webhook_secret=NEW)
    outlast.webhook("echo", "echo")  # the settings' secret
    outlast.webhook("rotating", "echo", secret=NEW, previous_secret=OLD)
    with TestClient(app) as client:
        yield client


def post(http, name: str, body: bytes, headers: dict[str, str]):
    return http.post(f"/outlast/webhooks/{name}", content=body, headers=headers)


def test_valid_delivery_triggers_the_task_with_the_body(http, runtime):
    body = json.dumps({"event": "signup", "user": 1}).encode()
    headers = sign_webhook(NEW, body, delivery_id="dlv_valid")
    answer = post(http, "echo", body, headers)
    assert answer.status_code == 202, answer.text
    run = runtime.client().poll(answer.json()["run_id"], timeout=60)
    assert run.status == "COMPLETED"
    assert run.output["payload"] == {"event": "signup", "user": 1}
    assert run.metadata["webhook"] == "echo" and run.metadata["delivery_id"] == "dlv_valid"


def test_wrong_key_is_refused(http):
    body = b'{"x": 1}'
    answer = post(http, "echo", body, sign_webhook("whsec_someone_else", body))
    assert answer.status_code == 401
    assert answer.json()["field"] == SIGNATURE and answer.json()["error"] == "invalid_signature"


def test_stale_and_future_timestamps_are_refused(http):
    body = b'{"x": 2}'
    stale = post(http, "echo", body, sign_webhook(NEW, body, timestamp=time.time() - 3600))
    assert stale.status_code == 401 and stale.json()["field"] == TIMESTAMP
    assert "old" in stale.json()["message"]
    future = post(http, "echo", body, sign_webhook(NEW, body, timestamp=time.time() + 3600))
    assert future.status_code == 401 and "future" in future.json()["message"]


def test_replayed_delivery_returns_the_first_run(http, runtime):
    body = b'{"x": 3}'
    headers = sign_webhook(NEW, body)
    first = post(http, "echo", body, headers)
    replay = post(http, "echo", body, headers)
    assert first.status_code == 202 and replay.status_code == 200
    assert replay.json() == {**first.json(), "duplicate": True}
    keyed = [run for run in runtime.client().iter_runs(task="echo")
             if run.idempotency_key == f"webhook:echo:{headers['Outlast-Webhook-Id']}"]
    assert len(keyed) == 1


def test_rotated_key_accepts_old_and_new_secrets_only(http):
    body = b'{"x": 4}'
    assert post(http, "rotating", body, sign_webhook(OLD, body)).status_code == 202
    assert post(http, "rotating", body, sign_webhook(NEW, body)).status_code == 202
    assert post(http, "rotating", body, sign_webhook("whsec_retired", body)).status_code == 401
    assert post(http, "echo", body, sign_webhook(OLD, body)).status_code == 401  # echo never had the old key


def test_tampered_body_is_refused(http):
    body = b'{"amount": 10}'
    answer = post(http, "echo", b'{"amount": 1000}', sign_webhook(NEW, body))
    assert answer.status_code == 401 and answer.json()["field"] == SIGNATURE


def test_missing_headers_bad_json_and_unknown_names(http):
    body = b'{"x": 5}'
    headers = sign_webhook(NEW, body)
    no_id = {k: v for k, v in headers.items() if k != "Outlast-Webhook-Id"}
    assert post(http, "echo", body, no_id).json()["field"] == "outlast-webhook-id"
    no_sig = {k: v for k, v in headers.items() if k != "Outlast-Webhook-Signature"}
    assert post(http, "echo", body, no_sig).json()["field"] == SIGNATURE
    not_json = post(http, "echo", b"a=1", sign_webhook(NEW, b"a=1"))
    assert not_json.status_code == 422 and not_json.json()["field"] == "body"
    unknown = post(http, "nope", body, headers)
    assert unknown.status_code == 404 and unknown.json()["field"] == "name"


def test_verify_signature_takes_any_of_several_signatures():
    body = b"{}"
    headers = sign_webhook(NEW, body, delivery_id="dlv_multi")
    mixed = f"v1={'0' * 64} {headers['Outlast-Webhook-Signature']}"
    request = AdapterRequest("POST", "/webhooks/x", headers={**headers, "Outlast-Webhook-Signature": mixed}, body=body)
    assert verify_signature(request, [NEW]) == "dlv_multi"
    with pytest.raises(WebhookSignatureError):
        verify_signature(request, [OLD])
    with pytest.raises(WebhookSignatureError, match="old"):
        verify_signature(request, [NEW], now=time.time() + 301)
