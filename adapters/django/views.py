"""The adapter endpoints as one CSRF-exempt Django view, streaming under WSGI and ASGI alike.

Under ASGI the request is handled on the server's event loop (the view hops onto it with
`async_to_sync`), so a Server-Sent-Events stream is an async iterator Django sends as it goes.
Under WSGI each worker thread keeps one private event loop; the stream becomes a plain iterator
that steps the async one on that loop, so it is sent chunk by chunk there too, and the thread's
client keeps its connections from one request to the next.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from outlast._adapter import AdapterRequest, AdapterResponse, headers_of

from .conf import endpoints

__all__ = ["endpoint"]

_local = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def _adapter_request(request: HttpRequest, path: str) -> AdapterRequest:
    return AdapterRequest(
        method=request.method or "GET", path="/" + path, headers=headers_of(request.headers.items()),
        body=request.body, query={key: request.GET.getlist(key)[0] for key in request.GET},
    )


def _stepped(loop: asyncio.AbstractEventLoop, stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(stream))
            except StopAsyncIteration:
                return
    finally:  # the browser went away or the stream ended: let the generator clean up on its own loop
        aclose = getattr(stream, "aclose", None)
        if aclose is not None and not loop.is_running():
            loop.run_until_complete(aclose())


def _django_response(answer: AdapterResponse, stream: Iterator[bytes] | AsyncIterator[bytes] | None) -> HttpResponse:
    if stream is not None:
        response: HttpResponse = StreamingHttpResponse(stream, status=answer.status)
    else:
        response = HttpResponse(answer.body, status=answer.status)
    for name, value in answer.headers.items():
        response[name] = value
    return response


@csrf_exempt
def endpoint(request: HttpRequest, path: str = "") -> HttpResponse:
    """Every adapter route (`runs/<id>`, `runs/<id>/stream`, `webhooks/<name>`, `health`, receivers)."""
    table = endpoints()
    adapter_request = _adapter_request(request, path)
    if isinstance(request, ASGIRequest):
        answer = async_to_sync(table.handle)(adapter_request)
        return _django_response(answer, answer.stream)
    loop = _thread_loop()
    answer = loop.run_until_complete(table.handle(adapter_request))
    return _django_response(answer, _stepped(loop, answer.stream) if answer.stream is not None else None)
