"""The SDK retries calls that are safe to repeat while the runtime answers 503 or cannot be reached,
for `OUTLAST_RETRY_FOR` seconds, then raises `RuntimeUnavailableError`; other calls are not repeated."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from outlast._errors import RuntimeUnavailableError
from tests.unit.test_client import API, SECRET, Recorder, async_client, run_json, sync_client

UNAVAILABLE = {"error": "database_unavailable", "message": "the runtime's database is unavailable"}


def flaky(failures: int, ok: dict, *, refuse: bool = False) -> Recorder:
    """Answers 503 (or drops the connection) `failures` times, then 200 with `ok`."""
    def respond(request: httpx.Request) -> httpx.Response:
        if len(recorder.requests) <= failures:
            if refuse:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(503, json=UNAVAILABLE, headers={"Retry-After": "0"})
        return httpx.Response(200, json=ok)

    recorder = Recorder(respond)
    return recorder


def test_reads_cancel_and_keyed_triggers_are_retried(monkeypatch):
    monkeypatch.setenv("OUTLAST_RETRY_FOR", "10")
    handler = flaky(3, run_json())
    with sync_client(handler) as client:
        assert client.retrieve_run("run_1").id == "run_1"
    assert len(handler.requests) == 4

    handler = flaky(2, run_json(status="CANCELED"), refuse=True)
    with sync_client(handler) as client:
        assert client.cancel_run("run_1").status.value == "CANCELED"
    assert len(handler.requests) == 3


def test_keyed_trigger_retried_unkeyed_not(monkeypatch):
    from outlast._client import trigger_options

    monkeypatch.setenv("OUTLAST_RETRY_FOR", "10")
    handler = flaky(2, {"id": "run_1", "task": "t"})
    with sync_client(handler) as client:
        assert client.trigger("t", 1, trigger_options(idempotency_key="k")).id == "run_1"
    assert len(handler.requests) == 3
    sent = [request.content for request in handler.requests]
    assert len(set(sent)) == 1  # the same body, key included, each time

    handler = flaky(2, {"id": "run_1", "task": "t"})
    with sync_client(handler) as client, pytest.raises(RuntimeUnavailableError, match="503"):
        client.trigger("t", 1)
    assert len(handler.requests) == 1  # without a key a repeat could start a second run


def test_gives_up_after_retry_for(monkeypatch):
    monkeypatch.setenv("OUTLAST_RETRY_FOR", "0.6")
    handler = flaky(10_000, run_json())
    started = time.monotonic()
    with sync_client(handler) as client, pytest.raises(RuntimeUnavailableError, match="503"):
        client.retrieve_run("run_1")
    assert 0.5 <= time.monotonic() - started < 3
    assert len(handler.requests) > 2

    monkeypatch.setenv("OUTLAST_RETRY_FOR", "0")
    handler = flaky(10_000, run_json(), refuse=True)
    with sync_client(handler) as client, pytest.raises(RuntimeUnavailableError, match="cannot connect"):
        client.retrieve_run("run_1")
    assert len(handler.requests) == 1


def test_async_client_retries_the_same_way(monkeypatch):
    monkeypatch.setenv("OUTLAST_RETRY_FOR", "10")
    handler = flaky(2, run_json())

    async def main() -> str:
        async with async_client(handler) as client:
            return (await client.retrieve_run("run_1")).id

    assert asyncio.run(main()) == "run_1"
    assert len(handler.requests) == 3


def test_retry_for_must_be_a_number(monkeypatch):
    from outlast import Client, ConfigurationError

    monkeypatch.setenv("OUTLAST_RETRY_FOR", "forever")
    with pytest.raises(ConfigurationError, match="OUTLAST_RETRY_FOR"):
        Client(API, SECRET)
    with pytest.raises(ConfigurationError, match="retry_for"):
        Client(API, SECRET, retry_for=float("nan"))


def test_the_argument_wins_over_the_environment(monkeypatch):
    from outlast import Client

    monkeypatch.setenv("OUTLAST_RETRY_FOR", "60")
    assert Client(API, SECRET, retry_for=0).settings.retry_for == 0
    assert Client(API, SECRET).settings.retry_for == 60


def test_adapters_retry_briefly_since_a_trigger_runs_inside_a_web_request(monkeypatch):
    from outlast._adapter import AdapterSettings

    monkeypatch.delenv("OUTLAST_RETRY_FOR", raising=False)
    monkeypatch.setenv("OUTLAST_SECRET_KEY", SECRET)
    assert AdapterSettings.from_mapping({}).make_client().settings.retry_for == 5
    assert AdapterSettings.from_mapping({"OUTLAST_RETRY_FOR": "0"}).make_async_client().settings.retry_for == 0
    assert AdapterSettings.from_mapping({}, retry_for=2).client.retry_for == 2
    monkeypatch.setenv("OUTLAST_RETRY_FOR", "12")
    assert AdapterSettings.from_mapping({}).client.retry_for == 12
