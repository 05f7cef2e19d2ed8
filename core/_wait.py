"""Durable waits inside a task: `wait.for_`, `wait.until`, tokens, and waiting for child runs.

Every function here is awaitable in async code and blocks in sync code: the same call works in
an `async def` task (`await wait.for_(hours=1)`) and in a plain `def` task (`wait.for_(hours=1)`).

A wait shorter than the task's `checkpoint_after` (5 s by default) sleeps in the process. A
longer one, or one whose end nobody knows (a child run, a token), goes through the supervisor:
after `checkpoint_after` seconds it checkpoints the whole process with CRIU and frees the slot,
and the code continues from the same line once everything it waits for is complete, possibly
on another machine. Timers use the wall clock, which keeps counting while the process is frozen.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from . import _client, _context, _hooks
from ._errors import OutlastError, RunFailedError
from ._validation import validate
from .wire import (
    BatchItem,
    CreateTokenRequest,
    Reply,
    RunStatus,
    TaskRunError,
    TokenCall,
    WaitpointKind,
    WaitpointResult,
    WaitSpec,
    WaitToken,
)

T = TypeVar("T")

__all__ = [
    "BatchRunResult", "TaskRunResult", "TokenResult", "WaitpointTimeoutError",
    "complete_token", "create_token", "for_", "for_token", "until",
]


class WaitpointTimeoutError(OutlastError):
    """A token's timeout passed before anyone completed it."""


@dataclass(frozen=True)
class TaskRunResult(Generic[T]):
    """How a child run ended: `ok` and its `output`, or its `error`. `.unwrap()` returns the output or raises."""

    ok: bool
    id: str
    status: RunStatus
    output: Any = None
    error: TaskRunError | None = None

    def unwrap(self) -> Any:
        if not self.ok:
            raise RunFailedError(self)
        return self.output


class BatchRunResult(Sequence[TaskRunResult[Any]]):
    """The results of a batch's runs, in the order of its items."""

    def __init__(self, runs: list[TaskRunResult[Any]]) -> None:
        self.runs = runs

    def __getitem__(self, index: Any) -> Any:
        return self.runs[index]

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[TaskRunResult[Any]]:
        return iter(self.runs)

    @property
    def ok(self) -> bool:
        return all(run.ok for run in self.runs)

    def unwrap(self) -> list[Any]:
        """Every run's output; raises RunFailedError for the first run that did not complete."""
        return [run.unwrap() for run in self.runs]

    def __repr__(self) -> str:
        return f"BatchRunResult({self.runs!r})"


@dataclass(frozen=True)
class TokenResult:
    """A token's data, or `timed_out` when its timeout passed first."""

    ok: bool
    id: str
    output: Any = None
    timed_out: bool = False

    def unwrap(self) -> Any:
        if not self.ok:
            raise WaitpointTimeoutError(f"token {self.id} timed out before it was completed")
        return self.output


# --- public functions --------------------------------------------------------------------------


def for_(*, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0) -> Any:
    """Wait this long (awaitable in async code, blocking in sync code)."""
    delta = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
    if delta.total_seconds() < 0:
        raise ValueError("a wait cannot be negative")
    return until(datetime.now(UTC) + delta)


def until(when: datetime) -> Any:
    """Wait until `when` (a naive datetime is taken as UTC)."""
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    active = _context.active_run()
    if active is None or when.timestamp() - time.time() < active.checkpoint_after:
        return _dual(lambda: _sleep_until(when.timestamp()), lambda: _asleep_until(when.timestamp()))
    spec = WaitSpec(kind=WaitpointKind.DATETIME, until=when)
    return _dual(lambda: _wait_none(spec), lambda: _await_none(spec))


def create_token(*, timeout: float | str | timedelta | datetime | None = None, tags: Sequence[str] = (),
                 idempotency_key: str | None = None, client: _client.Client | _client.AsyncClient | None = None,
                 ) -> Any:
    """A token to wait for with `for_token`; complete it with `complete_token(id, data)` or a POST to `.url`.

    Inside a task it is made through the supervisor; elsewhere with the API client (`client=`).
    """
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    request = validate(CreateTokenRequest, {"timeout": timeout, "tags": list(tags),
                                            "idempotency_key": idempotency_key})
    if _context.active_run() is None:
        return _client_call(client, lambda c: c.create_token(request))
    return _dual(lambda: _token_call(TokenCall(create=request)).result(),
                 lambda: _atoken_call(TokenCall(create=request)))


def for_token(token: WaitToken | str) -> Any:
    """Wait until the token is completed (its data in `.output`) or times out (`.timed_out`)."""
    token_id = token.id if isinstance(token, WaitToken) else token
    spec = WaitSpec(kind=WaitpointKind.TOKEN, token_id=token_id)
    return _dual(lambda: _token_result(_wait(spec)[0]), lambda: _atoken_result(spec))


def complete_token(token: WaitToken | str, data: Any = None, *,
                   client: _client.Client | _client.AsyncClient | None = None) -> Any:
    """Complete a token with `data` (from a task, or from any process with an API client)."""
    token_id = token.id if isinstance(token, WaitToken) else token
    if _context.active_run() is None:
        return _client_call(client, lambda c: c.complete_token(token_id, data))
    call = TokenCall(complete_id=token_id, data=data)
    return _dual(lambda: _token_call_none(call), lambda: _await_none_token(call))


def wait_for_runs(items: list[BatchItem], *, single: bool) -> Any:
    """Trigger child runs (locked to this run's version) and wait for all of them; used by Task."""
    if _context.active_run() is None:
        raise OutlastError("trigger_and_wait works inside a task run only; elsewhere use trigger() and "
                           "runs.poll()")
    spec = WaitSpec(kind=WaitpointKind.RUN, items=items)

    def shape(results: list[WaitpointResult]) -> Any:
        runs = [_run_result(result) for result in results]
        return runs[0] if single else BatchRunResult(runs)

    async def wait_async() -> Any:
        return shape(await _await(spec))

    return _dual(lambda: shape(_wait(spec)), wait_async)


# --- one implementation, two forms ---------------------------------------------------------------


def _dual(blocking: Callable[[], Any], coroutine: Callable[[], Awaitable[Any]]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return blocking()
    return coroutine()


def _channel() -> Any:
    active = _context.active_run()
    if active is None or not hasattr(active.channel, "call"):
        raise OutlastError("this wait works inside a task run only")
    return active.channel


def _register(spec: WaitSpec) -> concurrent.futures.Future[Reply]:
    return _channel().call(op="wait", wait=spec)


def _check(reply: Reply) -> Reply:
    if not reply.ok:
        error = reply.error
        raise OutlastError(f"{error.type}: {error.message}" if error else "the wait was refused")
    return reply


def _wait(spec: WaitSpec) -> list[WaitpointResult]:
    channel = _channel()
    reply = _check(_register(spec).result())
    results = [state.result or channel.waitpoint(state.id).result() for state in reply.waitpoints]
    _hooks.after_wait(channel.restores)  # checkpointed meanwhile: on_resume hooks, in the task's thread
    return results


async def _await(spec: WaitSpec) -> list[WaitpointResult]:
    channel = _channel()
    reply = _check(await asyncio.wrap_future(_register(spec)))
    results = [state.result or await asyncio.wrap_future(channel.waitpoint(state.id)) for state in reply.waitpoints]
    _hooks.after_wait(channel.restores)
    return results


def _wait_none(spec: WaitSpec) -> None:
    _wait(spec)


async def _await_none(spec: WaitSpec) -> None:
    await _await(spec)


def _token_call(call: TokenCall) -> concurrent.futures.Future[WaitToken | None]:
    future: concurrent.futures.Future[WaitToken | None] = concurrent.futures.Future()

    def done(reply_future: concurrent.futures.Future[Reply]) -> None:
        try:
            future.set_result(_check(reply_future.result()).token)
        except BaseException as exc:
            future.set_exception(exc)

    _channel().call(op="token", token=call).add_done_callback(done)
    return future


def _token_call_none(call: TokenCall) -> None:
    _token_call(call).result()


async def _atoken_call(call: TokenCall) -> WaitToken | None:
    return await asyncio.wrap_future(_token_call(call))


async def _await_none_token(call: TokenCall) -> None:
    await _atoken_call(call)


def _token_result(result: WaitpointResult) -> TokenResult:
    return TokenResult(ok=result.ok and not result.timed_out, id=result.id, output=result.output,
                       timed_out=result.timed_out)


async def _atoken_result(spec: WaitSpec) -> TokenResult:
    return _token_result((await _await(spec))[0])


def _run_result(result: WaitpointResult) -> TaskRunResult[Any]:
    return TaskRunResult(ok=result.ok, id=result.run_id or "", status=result.status or RunStatus.COMPLETED,
                         output=result.output, error=result.error)


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, 1.0))


async def _asleep_until(deadline: float) -> None:
    while (left := deadline - time.time()) > 0:
        await asyncio.sleep(min(left, 1.0))


def _client_call(client: Any, call: Callable[[Any], Any]) -> Any:
    """Outside a task: the API client does it (an AsyncClient's methods are awaitable)."""
    if client is None:
        client = _dual(_client.default_client, _client.default_async_client)
    return call(client)
