"""Per-process hooks: `@on_process_start` and `@on_resume`, and when a task process runs them.

Task processes are forked from a fork server that imported the project once, so whatever the
project opened at import (a file, a socket, a database connection) is shared by every task
process, as in any prefork server. Files and datagram sockets are fine to share; a connection
that speaks a protocol (PostgreSQL, Redis, HTTP keep-alive) is not: open those in a hook.

- `on_process_start` hooks run in each new task process before its first attempt, in that
  attempt's context (their output reaches its timeline). One that raised runs again before the
  next attempt of the same process; one that succeeded never runs again there.
- `on_resume` hooks run after the process was restored from a checkpoint, in the task's own
  thread, when the wait it was checkpointed in returns. TCP connections come back closed. (A
  checkpoint that failed lets the process carry on where it was: its hooks run then too.)

A hook that raises fails the attempt with the hook's name in the error, even if the task
catches the exception. Hooks are plain functions without arguments.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from ._errors import OutlastError

Hook = TypeVar("Hook", bound=Callable[[], Any])

_process_start: list[Callable[[], Any]] = []
_resume: list[Callable[[], Any]] = []
_each_attempt: list[Callable[[], Any]] = []  # library integrations, e.g. Django's close_old_connections
_started: list[Callable[[], Any]] = []  # the on_process_start hooks that succeeded in this process
_restores_seen = 0
_failure: ProcessHookError | None = None  # the hook that failed during the current attempt


class ProcessHookError(OutlastError):
    """An `on_process_start` or `on_resume` hook raised; the attempt fails with this error."""


def on_process_start(fn: Hook) -> Hook:
    """Run `fn()` in each new task process before its first attempt (open connections here)."""
    _process_start.append(_checked(fn))
    return fn


def on_resume(fn: Hook) -> Hook:
    """Run `fn()` in a task process restored from a checkpoint, before the task continues."""
    _resume.append(_checked(fn))
    return fn


def on_each_attempt(fn: Callable[[], Any]) -> None:
    """For library integrations: run `fn()` before and after every attempt (not a public hook)."""
    _each_attempt.append(_checked(fn))


def _checked(fn: Callable[[], Any]) -> Callable[[], Any]:
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"{_name(fn)}: process hooks are plain functions, not coroutines")
    return fn


def _name(fn: Callable[[], Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _call(kind: str, hook: Callable[[], Any]) -> None:
    global _failure
    try:
        hook()
    except Exception as exc:
        _failure = ProcessHookError(f"{kind} hook {_name(hook)} failed: {type(exc).__name__}: {exc}")
        raise _failure from exc


def begin_attempt() -> None:
    """Before an attempt's task code: the process-start hooks still to run, then the per-attempt ones."""
    global _failure
    _failure = None
    for hook in list(_process_start):
        if hook not in _started:
            _call("on_process_start", hook)
            _started.append(hook)
    for hook in _each_attempt:
        _call("on_each_attempt", hook)


def end_attempt() -> ProcessHookError | None:
    """After an attempt: the per-attempt calls (their errors are printed, the result stands); returns
    the hook that failed during the attempt, if any, which fails it whatever the task did."""
    for hook in _each_attempt:
        try:
            hook()
        except Exception:
            traceback.print_exc(file=sys.stderr)
    return _failure


def after_wait(restores: int) -> None:
    """A wait returned; `restores` counts this process's restores. Runs the resume hooks if it grew."""
    global _restores_seen
    if restores == _restores_seen:
        return
    _restores_seen = restores
    for hook in list(_resume):
        _call("on_resume", hook)
