"""The adapters' `/outlast` mount proxies the runtime's SSE (a real runtime, FastAPI's own test client):
the run's stream, run changes frame for frame, a 1,000-chunk stream resumed with Last-Event-ID, the
browser module, the runtime's refusal of a wrong token passed through as JSON, and a host app (a real
uvicorn process) that stops on SIGTERM with proxied streams open."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from outlast.adapters.fastapi import Outlast
from tests.conftest import SECRET_KEY, free_port, runtime_process, stop_process, wait_for


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


APP = """
import os
from fastapi import FastAPI
from outlast.adapters.fastapi import Outlast

app = FastAPI()
Outlast(app, api_url=os.environ["OUTLAST_API_URL"], secret_key=os.environ["OUTLAST_SECRET_KEY"], tasks=[])
"""


def test_open_proxied_streams_do_not_hold_the_host_apps_shutdown(runtime, tmp_path):
    """A real uvicorn serving a FastAPI app stops on SIGTERM while a browser follows a run through the mount
    (both kinds of stream: the parsed run stream and the passed-through changes)."""
    (tmp_path / "host_app.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": SECRET_KEY}
    host = subprocess.Popen([sys.executable, "-m", "uvicorn", "host_app:app", "--port", str(port),
                             "--app-dir", str(tmp_path)], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{port}/outlast/health"), message="the host app")
        client = runtime.client()
        run = client.trigger("gated", {"marker": "proxy-shutdown"})  # never opened: it keeps executing
        token = client.create_public_token(run.id).token
        seen: dict[str, list[str]] = {"stream": [], "subscribe": []}

        def follow(kind: str) -> None:
            with contextlib.suppress(httpx.HTTPError), httpx.stream(
                    "GET", f"http://127.0.0.1:{port}/outlast/runs/{run.id}/{kind}", params={"token": token},
                    timeout=120) as answer:
                for line in answer.iter_lines():
                    if line.startswith("event:"):
                        seen[kind].append(line)
            seen[kind].append("closed")

        readers = [threading.Thread(target=follow, args=(kind,), daemon=True) for kind in seen]
        for reader in readers:
            reader.start()
        wait_for(lambda: all(seen.values()), message="both streams' first events")
        host.send_signal(signal.SIGTERM)
        host.wait(30)  # without the fix uvicorn waits for the streams forever
        for reader in readers:
            reader.join(10)
        assert all(lines[-1] == "closed" and "event: end" not in lines for lines in seen.values()), seen
    finally:
        stop_process(host)


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def test_a_relayed_stream_sends_its_own_keepalives(monkeypatch):
    """httpx-sse hides the runtime's keep-alive comments from the parsing proxy: it sends its own."""
    from outlast._adapter import _relay

    monkeypatch.setattr(_relay, "KEEPALIVE_SECONDS", 0.02)

    async def quiet_then_one() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.2)
        yield b"data: 1\n\n"

    async def relayed() -> list[bytes]:
        return [chunk async for chunk in _relay.relayed(quiet_then_one(), keepalive=True)]
    chunks = asyncio.run(relayed())
    assert chunks[-1] == b"data: 1\n\n" and _relay.KEEPALIVE in chunks[:-1]
