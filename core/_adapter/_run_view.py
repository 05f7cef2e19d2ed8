"""Run status for browsers: one run, read with a public token (its SSE stream: _realtime_proxy.py).

The browser holds a short-lived public access token scoped to the run (minted by the runtime at
the app's request); the adapter forwards it to the runtime, which checks it. The app's secret
key is never sent on the browser's behalf.
"""

from __future__ import annotations

from outlast._client import AsyncClient
from outlast.wire import PUBLIC_TOKEN_PREFIX, Run

from ._http import AdapterRequest, AdapterResponse, error_response, json_response

__all__ = ["public_token", "retrieve_run"]


async def _fetch(client: AsyncClient, run_id: str, token: str) -> Run:
    call = client.requests.retrieve_run(run_id)
    call.request.headers["Authorization"] = f"Bearer {token}"  # the browser's token, not the app's key
    return await client.execute(call)


def public_token(request: AdapterRequest) -> str | AdapterResponse:
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
    token = public_token(request)
    if isinstance(token, AdapterResponse):
        return token
    assert request.endpoints is not None
    run = await _fetch(request.endpoints.async_client(), request.path_params["run_id"], token)
    return json_response(_view(run), headers={"cache-control": "no-store"})
