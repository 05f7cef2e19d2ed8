"""`client.schedules` and `client.deployments`: one request builder, the same requests from both twins."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from outlast import AsyncClient, Client, schedules
from outlast._deployments import AsyncDeployments, Deployments
from outlast._errors import InvalidRequestError

API = "http://runtime.test"
SCHEDULE = {"id": "sched_1", "type": "IMPERATIVE", "task": "t", "cron": "0 * * * *", "timezone": "UTC",
            "active": True, "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:00Z"}
DEPLOYMENT = {"version": "20240501.1", "env": "dev", "status": "READY", "bundle_sha256": "ab", "bundle_bytes": 3,
              "files": 1, "created_at": "2024-05-01T12:00:00Z"}
ENV_VAR = {"name": "A", "hint": "…1", "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:00Z"}


def respond(request: httpx.Request) -> httpx.Response:
    path = request.url.path.removeprefix("/api/v1")
    if path == "/schedules" and request.method == "GET":
        return httpx.Response(200, json={"data": [SCHEDULE]})
    if path.startswith("/schedules"):
        return httpx.Response(200, json=SCHEDULE)
    if path.startswith("/env-vars"):
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json=[ENV_VAR] if request.method == "GET" else ENV_VAR)
    return httpx.Response(200, json=[DEPLOYMENT] if path == "/deployments" and request.method == "GET" else DEPLOYMENT)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return respond(request)


def key(request: httpx.Request) -> tuple[Any, ...]:
    return (request.method, str(request.url), request.content, request.headers.get("content-type"),
            request.extensions["timeout"])


def schedule_calls(c: Any) -> list[Any]:
    return [
        c.schedules.create("t", "0 * * * *", external_id="user_1", deduplication_key="d", active=False),
        c.schedules.list(task="t", active=True, limit=5), c.schedules.retrieve("sched_1"),
        c.schedules.update("sched_1", cron="*/5 * * * *", timezone=None), c.schedules.activate("sched_1"),
        c.schedules.deactivate("sched_1"), c.schedules.delete("sched_1"),
    ]


def deployment_calls(d: Any) -> list[Any]:
    return [d.get("20240501.1"), d.list(), d.promote(commit="abcdef"), d.env_list(), d.env_set("A", "x1"),
            d.env_delete("A")]


def test_both_twins_send_the_same_requests_and_read_the_same_answers() -> None:
    sync, asynchronous = Recorder(), Recorder()
    with Client(API, "sk", transport=httpx.MockTransport(sync)) as client:
        sync_results = schedule_calls(client) + deployment_calls(client.deployments)

    async def main() -> list[Any]:
        async with AsyncClient(API, "sk", transport=httpx.MockTransport(asynchronous)) as client:
            return [await call for call in schedule_calls(client) + deployment_calls(client.deployments)]

    assert asyncio.run(main()) == sync_results
    assert list(map(key, asynchronous.requests)) == list(map(key, sync.requests))
    created = sync.requests[0]
    assert json.loads(created.content) == {"task": "t", "cron": "0 * * * *", "timezone": "UTC",
                                           "external_id": "user_1", "deduplication_key": "d", "catch_up": "last",
                                           "active": False}
    assert sync.requests[1].url.query == b"limit=5&task=t&active=true"
    changed = json.loads(sync.requests[3].content)
    assert changed["cron"] == "*/5 * * * *" and changed["timezone"] is None  # None: the runtime keeps the value
    assert sync_results[-1] is None  # 204


def test_the_module_functions_and_the_namespace_classes_are_the_same_calls() -> None:
    recorder = Recorder()
    with Client(API, "sk", transport=httpx.MockTransport(recorder)) as client:
        assert schedules.retrieve("sched_1", client=client).id == "sched_1"
        assert Deployments(client).get("v").version == "20240501.1"
    assert [r.url.path for r in recorder.requests] == ["/api/v1/schedules/sched_1", "/api/v1/deployments/v"]
    assert isinstance(AsyncClient(API, "sk").deployments, AsyncDeployments)


def test_a_bundle_upload_is_gzip_with_a_longer_timeout() -> None:
    recorder = Recorder()
    with Client(API, "sk", timeout=10, transport=httpx.MockTransport(recorder)) as client:
        client.deployments.deploy(b"tgz", commit="abc", branch=None)
    upload = recorder.requests[0]
    assert upload.headers["content-type"] == "application/gzip" and upload.content == b"tgz"
    assert upload.url.query == b"commit=abc" and upload.extensions["timeout"]["read"] == 120


def test_bad_schedule_arguments_fail_before_anything_is_sent() -> None:
    recorder = Recorder()
    with Client(API, "sk", transport=httpx.MockTransport(recorder)) as client:
        with pytest.raises(TypeError, match="unexpected keyword argument 'zone'"):
            client.schedules.create("t", "0 * * * *", zone="UTC")  # type: ignore[call-arg]
        with pytest.raises(InvalidRequestError) as caught:
            client.schedules.create("t", "0 * * * *", timezone="Mars/Olympus")
        assert caught.value.field == "timezone"
        with pytest.raises(InvalidRequestError):
            client.schedules.retrieve("")
    assert recorder.requests == []
