"""The adapters' `/outlast` mount proxies the runtime's SSE (a real runtime, FastAPI's own test client):
the run's stream, run changes frame for frame, a 1,000-chunk stream resumed with Last-Event-ID, the
browser module, and the runtime's refusal of a wrong token passed through as JSON."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from outlast.adapters.fastapi import Outlast
from tests.conftest import SECRET_KEY, runtime_process


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    process = runtime_process(tmp_path_factory.mktemp("adapter-proxy"), None, project="realtime")
    yield process.start()
    process.close()


@pytest.fixture
def http(runtime):
    app = FastAPI()
    Outlast(app, api_url=runtime.url, secret_key=SECRET_KEY, tasks=[])
    with TestClient(app) as client:
        yield client


def _events(response) -> list[tuple[str | None, str, str]]:
    events, fields = [], {}
    for line in response.iter_lines():
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif "data" in fields:
            events.append((fields.get("id"), fields.get("event", "message"), fields["data"]))
            fields = {}
        else:
            fields = {}
    return events


def test_the_mount_proxies_the_runtimes_events_and_streams(http, runtime):
    client = runtime.client()
    run = client.trigger("stream-tokens", {"count": 1000})
    token = client.create_public_token(run.id).token
    client.poll(run.id, timeout=30)

    with http.stream("GET", f"/outlast/runs/{run.id}/stream", params={"token": token}) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"] == "text/event-stream"
        shown = _events(answer)
    assert [event for _, event, _ in shown] == ["run"] * 3 and '"status":"COMPLETED"' in shown[-1][2]
    assert all(cursor for cursor, _, _ in shown), "each event carries the runtime's cursor"

    with http.stream("GET", f"/outlast/runs/{run.id}/streams/tokens", params={"token": token}) as answer:
        whole = _events(answer)
    assert whole[-1][1] == "end" and len(whole) == 1001
    resume_at = whole[399][0]
    with http.stream("GET", f"/outlast/runs/{run.id}/streams/tokens", params={"token": token},
                     headers={"Last-Event-ID": resume_at}) as answer:
        rest = _events(answer)
    assert [data for _, _, data in rest] == [data for _, _, data in whole[400:]]

    with http.stream("GET", f"/outlast/runs/{run.id}/subscribe", params={"token": token}) as answer:
        changes = _events(answer)
    assert [event for _, event, _ in changes] == ["run", "run", "run", "end"]

    module = http.get("/outlast/realtime.js")
    assert module.status_code == 200 and "export function subscribeToStream" in module.text
    assert module.headers["content-type"].startswith("text/javascript")


def test_the_runtimes_refusal_comes_back_as_json(http, runtime):
    client = runtime.client()
    run = client.trigger("stream-sync", {"count": 1})
    other = client.trigger("stream-sync", {"count": 1})
    token = client.create_public_token(other.id).token
    for path in (f"/outlast/runs/{run.id}/stream", f"/outlast/runs/{run.id}/streams/lines"):
        refused = http.get(path, params={"token": token})
        assert refused.status_code == 401 and "does not cover" in refused.json()["message"], path
    assert http.get(f"/outlast/runs/{run.id}/subscribe").status_code == 401
    assert http.get(f"/outlast/runs/{run.id}/stream", params={"token": SECRET_KEY}).status_code == 401
