"""Run status for browsers: one run, or a Server-Sent-Events stream of it, read with a public token.

The browser holds a short-lived public access token scoped to the run (minted by the runtime at
the app's request); the adapter forwards it to the runtime, which checks it. The app's secret
key is never sent on the browser's behalf.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from outlast._client import AsyncClient
from outlast.wire import PUBLIC_TOKEN_PREFIX, Run

from ._http import AdapterRequest, AdapterResponse, error_response, json_response

__all__ = ["POLL_INTERVAL", "retrieve_run", "stream_run"]

POLL_INTERVAL = 0.5  # how often the stream asks the runtime for changes
KEEPALIVE = 15.0  # an SSE comment this often keeps proxies from closing an idle stream


async def _fetch(client: AsyncClient, run_id: str, token: str) -> Run:
    call = client.requests.retrieve_run(run_id)
    call.request.headers["Authorization"] = f"Bearer {token}"  # the browser's token, not the app's key
    return await client.execute(call)


def _token(request: AdapterRequest) -> str | AdapterResponse:
    token = request.bearer_token()
    if not token:
        return error_response(401, "unauthorized", "missing public access token: send "
                              "'Authorization: Bearer <token>' or ?token=<token>", "token")
    if not token.startswith(PUBLIC_TOKEN_PREFIX):
        # Only public tokens: a secret key has no business in a browser, so it is not honoured here.
        return error_response(401, "unauthorized", "not a public access token (they start with "
                              f"{PUBLIC_TOKEN_PREFIX!r}); mint one with client.public_token(run_id)", "token")
    return token


def _view(run: Run) -> dict:
    return run.model_dump(mode="json")


async def retrieve_run(request: AdapterRequest) -> AdapterResponse:
    token = _token(request)
    if isinstance(token, AdapterResponse):
        return token
    assert request.endpoints is not None
    run = await _fetch(request.endpoints.async_client(), request.path_params["run_id"], token)
    return json_response(_view(run), headers={"cache-control": "no-store"})


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_run(request: AdapterRequest) -> AdapterResponse:
    """`run` events whenever status or metadata change, until the run is final; then the stream ends.

    The first read happens before the answer starts, so a bad token or an unknown run is an
    ordinary JSON error, not a broken stream.
    """
    token = _token(request)
    if isinstance(token, AdapterResponse):
        return token
    assert request.endpoints is not None
    client = request.endpoints.async_client()
    run_id = request.path_params["run_id"]
    first = await _fetch(client, run_id, token)

    async def events() -> AsyncIterator[bytes]:
        run, last_sent = first, time.monotonic()
        seen = None
        while True:
            state = (run.status, run.metadata, run.attempts)
            if state != seen:
                seen, last_sent = state, time.monotonic()
                yield _event("run", _view(run))
            elif time.monotonic() - last_sent >= KEEPALIVE:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
            if run.is_final:
                return
            await asyncio.sleep(POLL_INTERVAL)
            try:
                run = await _fetch(client, run_id, token)
            except Exception as exc:  # an expired token or a runtime gone: tell the browser, then end
                yield _event("error", {"message": str(exc), "type": type(exc).__name__})
                return

    headers = {"content-type": "text/event-stream", "cache-control": "no-store", "x-accel-buffering": "no"}
    return AdapterResponse(200, headers, stream=events())
