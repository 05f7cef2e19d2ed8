"""The trace id of the web request being served, copied into the metadata of runs it triggers.

Framework adapters set it per request (`traceparent`, else `x-request-id`); `Client` and
`AsyncClient` read it when they build a trigger, so a run can be found from the request that
started it. Values the caller sets in `metadata` win.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["current_trace", "reset_trace", "set_trace", "trace_from_headers", "tracing"]

_current: ContextVar[dict[str, str] | None] = ContextVar("outlast_trace", default=None)
# W3C Trace Context: version-traceid-parentid-flags
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_MAX_REQUEST_ID = 200


def trace_from_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """Run metadata naming the request: from `traceparent`, else `x-request-id` (lower-case header names)."""
    traceparent = (headers.get("traceparent") or "").strip().lower()
    match = _TRACEPARENT.match(traceparent)
    if match:
        return {"trace_id": match.group(1), "traceparent": traceparent}
    request_id = (headers.get("x-request-id") or "").strip()
    if request_id and len(request_id) <= _MAX_REQUEST_ID:
        return {"trace_id": request_id}
    return None


def current_trace() -> dict[str, str] | None:
    return _current.get()


def set_trace(trace: Mapping[str, str] | None) -> Token[dict[str, str] | None]:
    """From now on, triggered runs carry `trace`; for frameworks whose request hooks come apart (Flask)."""
    return _current.set(dict(trace) if trace else None)


def reset_trace(token: Token[dict[str, str] | None]) -> None:
    """Back to the trace before the `set_trace` that returned `token`."""
    _current.reset(token)


@contextlib.contextmanager
def tracing(trace: Mapping[str, str] | None) -> Iterator[None]:
    """Within the block, triggered runs carry `trace` in their metadata."""
    token = set_trace(trace)
    try:
        yield
    finally:
        reset_trace(token)


def with_trace(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`metadata` with the current trace's keys added where not already set; None if nothing to add."""
    trace = _current.get()
    if not trace:
        return None
    return {**trace, **(metadata or {})}
