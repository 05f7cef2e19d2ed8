"""Public access tokens: minted by the runtime for the app, they let a browser read one run (or tagged runs) only."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from outlast import InvalidRequestError, NotFoundError, trigger_options
from outlast.runtime.access.public_tokens import InvalidToken, PublicTokens
from outlast.wire import PublicTokenRequest
from tests.adapters._support import project_runtime_fixture
from tests.conftest import PROJECTS
from tests.e2e._shared import prod_key

runtime = project_runtime_fixture(PROJECTS / "basic")


@pytest.fixture(scope="module")
def client(runtime):
    return runtime.client()


def read(runtime, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{runtime.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_token_reads_its_run_and_events_and_nothing_else(runtime, client):
    mine = client.trigger("echo", {"n": 1})
    other = client.trigger("echo", {"n": 2})
    token = client.create_public_token(mine.id, ttl="10m")
    assert token.token.startswith("olpt_") and token.runs == [mine.id]
    assert "ol_dev" not in token.token  # the secret key is not in it, in any form we could recognise

    client.poll(mine.id, timeout=60)
    run = read(runtime, f"/runs/{mine.id}", token.token)
    assert run.status_code == 200 and run.json()["status"] == "COMPLETED"
    assert read(runtime, f"/runs/{mine.id}/events", token.token).status_code == 200

    refused = read(runtime, f"/runs/{other.id}", token.token)
    assert refused.status_code == 401 and refused.json()["field"] == "authorization"
    assert read(runtime, "/runs", token.token).status_code == 401  # listing needs the secret key
    trigger = httpx.post(f"{runtime.url}/api/v1/tasks/echo/trigger", json={"payload": {}},
                         headers={"Authorization": f"Bearer {token.token}"})
    assert trigger.status_code == 401


def test_tag_scoped_token_reads_runs_with_that_tag(runtime, client):
    tagged = client.trigger("echo", {"n": 3}, trigger_options(tags=["user_77"]))
    untagged = client.trigger("echo", {"n": 4})
    token = client.create_public_token(tags="user_77").token
    assert read(runtime, f"/runs/{tagged.id}", token).status_code == 200
    assert read(runtime, f"/runs/{untagged.id}", token).status_code == 401


def test_forged_and_foreign_tokens_are_refused(runtime, client):
    run = client.trigger("echo", {})
    other = client.trigger("echo", {})
    token = client.create_public_token(run.id).token
    body, signature = token.removeprefix("olpt_").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["runs"] = [other.id]
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = read(runtime, f"/runs/{other.id}", f"olpt_{forged_body}.{signature}")
    assert forged.status_code == 401 and forged.json()["message"] == "invalid public token"
    assert read(runtime, f"/runs/{run.id}", "olpt_garbage").json()["message"] == "malformed public token"

    # A prod token cannot name a dev run, and a token for prod's runs does not open dev's.
    prod = runtime.client(prod_key(runtime))
    with pytest.raises(NotFoundError) as missing:
        prod.create_public_token(run.id)
    assert missing.value.field == "runs.0"
    prod_token = prod.create_public_token(tags="anything").token
    assert read(runtime, f"/runs/{run.id}", prod_token).status_code == 404  # looked up among prod's runs


def test_bad_requests_name_the_field(client):
    with pytest.raises(InvalidRequestError) as empty:
        client.create_public_token()
    assert empty.value.field == "runs"
    with pytest.raises(InvalidRequestError) as too_long:
        client.create_public_token("run_x", ttl="2d")
    assert too_long.value.field == "ttl"


def test_tokens_expire():
    tokens = PublicTokens(db=None, secret="runtime-secret")
    minted = tokens.mint("dev", PublicTokenRequest(runs=["run_1"], ttl=60), now=1000.0)
    assert tokens.verify(minted.token, now=1059.0)["runs"] == ["run_1"]
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(minted.token, now=1060.0)
    with pytest.raises(InvalidToken, match="invalid"):
        PublicTokens(db=None, secret="another-secret").verify(minted.token, now=1001.0)
