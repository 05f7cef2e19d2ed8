"""ASGI middleware that refuses request bodies over the payload limit before they are read."""

from __future__ import annotations

import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outlast.wire import ErrorBody


class BodyLimit:
    """Refuse request bodies over the limit with 413 before they are read into memory.

    A trigger's body may hold one payload of `max_payload_bytes` plus its options; a batch's up to
    ten times that. Each payload is still held to the payload limit by the endpoint itself.
    """

    def __init__(self, app: ASGIApp, max_payload_bytes: int) -> None:
        self.app = app
        self.max_payload_bytes = max_payload_bytes

    def _limit(self, path: str) -> int:
        return self.max_payload_bytes * (10 if path.endswith("/batch-trigger") else 1) + 64 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Payload limits are for triggers; a worker's reports are bounded by the outputs it carries.
        # Bundle uploads (`/deployments`) are held to their own limit by their endpoint.
        if (scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") or "/worker/" in scope["path"]
                or scope["path"].endswith("/deployments")):
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, scope["path"], f"of {int(declared)} bytes")
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                too_large = True
                raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns an exception raised while it reads the body into its own 400 answer;
            # once the body is known to be too large, that answer is replaced by the 413.
            if not too_large:
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if too_large:
            await self._refuse(send, scope["path"], f"of more than {limit} bytes")

    async def _refuse(self, send: Send, path: str, size: str) -> None:
        limit = self.max_payload_bytes
        if path.endswith("/batch-trigger"):
            message = (f"request body {size} exceeds the batch limit of {self._limit(path)} "
                       f"bytes (ten times the payload limit of {limit} bytes); split the batch")
        else:
            message = f"request body {size} exceeds the payload limit of {limit} bytes"
        body = ErrorBody(error="payload_too_large", field="payload", message=message)
        content = body.model_dump_json(exclude_none=True).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class _BodyTooLarge(Exception):
    pass

