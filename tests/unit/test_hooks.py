"""Process hooks without a runtime: when they run, and how a failure names the hook."""

from __future__ import annotations

import pytest

from outlast import _hooks


@pytest.fixture(autouse=True)
def fresh_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_process_start", "_resume", "_each_attempt", "_started"):
        monkeypatch.setattr(_hooks, name, [])
    monkeypatch.setattr(_hooks, "_restores_seen", 0)
    monkeypatch.setattr(_hooks, "_failure", None)


def test_process_start_hooks_run_once_and_a_failed_one_again_before_the_next_attempt() -> None:
    calls: list[str] = []
    failures = iter([RuntimeError("not yet")])

    @_hooks.on_process_start
    def first() -> None:
        calls.append("first")

    @_hooks.on_process_start
    def flaky() -> None:
        calls.append("flaky")
        if (error := next(failures, None)) is not None:
            raise error

    with pytest.raises(_hooks.ProcessHookError, match=r"on_process_start hook .*flaky failed: RuntimeError: not yet"):
        _hooks.begin_attempt()
    assert _hooks.end_attempt() is not None, "the attempt fails"
    _hooks.begin_attempt()
    assert _hooks.end_attempt() is None
    _hooks.begin_attempt()
    assert calls == ["first", "flaky", "flaky"]


def test_resume_hooks_run_once_per_wait_that_saw_a_restore() -> None:
    calls: list[int] = []
    _hooks.on_resume(lambda: calls.append(1))
    _hooks.after_wait(0)
    _hooks.after_wait(1)
    _hooks.after_wait(1)
    _hooks.after_wait(3)
    assert calls == [1, 1]


def test_a_failed_resume_hook_fails_the_attempt_even_if_the_task_swallows_it() -> None:
    @_hooks.on_resume
    def reconnect() -> None:
        raise OSError("no route")

    _hooks.begin_attempt()
    with pytest.raises(_hooks.ProcessHookError):
        _hooks.after_wait(1)
    failure = _hooks.end_attempt()
    assert failure is not None
    assert "on_resume hook" in str(failure) and "reconnect failed: OSError: no route" in str(failure)


def test_hooks_are_plain_functions() -> None:
    async def connect() -> None: ...

    with pytest.raises(TypeError, match="plain functions"):
        _hooks.on_process_start(connect)
