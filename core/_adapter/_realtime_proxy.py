"""The `/outlast` mount's realtime endpoints: the runtime's Server-Sent Events, proxied (no polling).

    GET /runs/{run_id}/stream          `run` events (the run as JSON) until it is final: the mount's own format
    GET /runs/{run_id}/subscribe       the runtime's run changes, frame for frame
    GET /runs/{run_id}/streams/{name}  the runtime's stream chunks, frame for frame
    GET /realtime.js                   the runtime's browser module (its paths then lead here)

The browser's public access token (header or `?token=`) and its `Last-Event-ID` go to the runtime,
which checks the token and resumes from the cursor; the app's secret key is never used for them.
The runtime's refusal (401, 404, 422) comes back as it is, before any event is sent. Every stream ends
when the host server is told to stop (see _relay.py), so that it can.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
from httpx_sse import EventSource

from ..wire import API_PREFIX, END_EVENT, RUN_EVENT
from ._http import AdapterRequest, AdapterResponse
from ._relay import relayed
from ._run_view import public_token

__all__ = ["browser_module", "proxy_run_changes", "proxy_stream", "stream_run"]

SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-store", "x-accel-buffering": "no"}
_module_cache: dict[str, bytes] = {}


async def _open(request: AdapterRequest, path: str, token: str,
                params: dict[str, str]) -> tuple[httpx.AsyncClient, httpx.Response] | AdapterResponse:
    """Connect to the runtime's SSE endpoint; its refusal is the answer (JSON), before any event."""
    assert request.endpoints is not None
    settings = request.endpoints.async_client().settings
    http = httpx.AsyncClient(base_url=settings.api_url + API_PREFIX, timeout=httpx.Timeout(settings.timeout, read=None))
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if request.header("last-event-id"):
        headers["Last-Event-ID"] = request.header("last-event-id") or ""
    response = await http.send(http.build_request("GET", path, params=params, headers=headers), stream=True)
    if response.status_code != 200:
        body = await response.aread()
        await response.aclose()
        await http.aclose()
        return AdapterResponse(response.status_code, {"content-type": "application/json"}, body=body)
    return http, response


async def _raw(http: httpx.AsyncClient, response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    finally:
        await response.aclose()
        await http.aclose()


async def _passthrough(request: AdapterRequest, path: str) -> AdapterResponse:
    token = public_token(request)
    if isinstance(token, AdapterResponse):
        return token
    params = {name: request.query[name] for name in ("after", "logs") if request.query.get(name)}
    opened = await _open(request, path, token, params)
    if isinstance(opened, AdapterResponse):
        return opened
    return AdapterResponse(200, dict(SSE_HEADERS), stream=relayed(_raw(*opened), keepalive=False))


async def proxy_run_changes(request: AdapterRequest) -> AdapterResponse:
    return await _passthrough(request, f"/runs/{quote(request.path_params['run_id'], safe='')}/subscribe")


async def proxy_stream(request: AdapterRequest) -> AdapterResponse:
    run_id, name = (quote(request.path_params[key], safe="") for key in ("run_id", "name"))
    return await _passthrough(request, f"/runs/{run_id}/streams/{name}")


async def stream_run(request: AdapterRequest) -> AdapterResponse:
    """`run` events, each the run as JSON, with the runtime's cursor as id, until the run is final."""
    token = public_token(request)
    if isinstance(token, AdapterResponse):
        return token
    opened = await _open(request, f"/runs/{quote(request.path_params['run_id'], safe='')}/subscribe", token, {})
    if isinstance(opened, AdapterResponse):
        return opened
    http, response = opened

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in EventSource(response).aiter_sse():
                if event.event == END_EVENT:
                    return
                if event.event == RUN_EVENT:
                    run = json.loads(event.data)["run"]
                    yield f"id: {event.id}\nevent: run\ndata: {json.dumps(run, separators=(',', ':'))}\n\n".encode()
        except httpx.HTTPError as exc:  # the runtime went away: tell the browser, then end
            yield f"event: error\ndata: {json.dumps({'message': str(exc), 'type': type(exc).__name__})}\n\n".encode()
        finally:
            await response.aclose()
            await http.aclose()

    # httpx-sse does not show the runtime's keep-alive comments: this stream sends its own.
    return AdapterResponse(200, dict(SSE_HEADERS), stream=relayed(events(), keepalive=True))


async def browser_module(request: AdapterRequest) -> AdapterResponse:
    """The runtime's `realtime.js`, fetched once; served here, its requests come to this mount."""
    assert request.endpoints is not None
    client = request.endpoints.async_client()
    body = _module_cache.get(client.settings.api_url)
    if body is None:
        async with httpx.AsyncClient(timeout=client.settings.timeout) as http:
            answer = await http.get(client.settings.api_url + API_PREFIX + "/realtime.js")
        if answer.status_code != 200:
            return AdapterResponse(502, {"content-type": "text/plain"}, body=b"the runtime did not serve realtime.js")
        body = _module_cache[client.settings.api_url] = answer.content
    return AdapterResponse(200, {"content-type": "text/javascript", "cache-control": "public, max-age=300"}, body=body)
