"""Failures: retries with backoff, aborts, max_duration, cancel, crashed and frozen task processes."""

from __future__ import annotations

import re
import time

import pytest

from outlast import RunStatus, trigger_options
from tests.conftest import wait_for
from tests.e2e._shared import lines, process_gone, shared_runtime_fixture

# Tests that need no runtime of their own share one per store: `runtime` and `client` below.
shared_runtime = shared_runtime_fixture()


@pytest.fixture
def runtime(shared_runtime):
    return shared_runtime


@pytest.fixture
def client(shared_runtime):
    return shared_runtime.client()


def _status_messages(client, run_id: str) -> list[str]:
    return [e.message for e in client.run_events(run_id) if e.kind == "status"]


def _finishes(client, run_id: str, timeout: float = 30):
    return client.poll(run_id, interval=0.1, timeout=timeout)


# --- retries --------------------------------------------------------------------------------


def test_retries_until_an_attempt_succeeds(runtime, client):
    handle = client.trigger("flaky", {"succeed_on": 3})
    run = _finishes(client, handle.id)
    assert run.status is RunStatus.COMPLETED
    assert run.attempts == 3
    assert run.output == {"attempt": 3}
    assert run.error is None
    attempts = [int(line.split()[0]) for line in lines(runtime.scratch / f"flaky-{handle.id}")]
    assert attempts == [1, 2, 3]


def test_backoff_grows_between_attempts_then_fails_with_the_last_error(runtime, client):
    handle = client.trigger("backoff", {})
    run = _finishes(client, handle.id)
    assert run.status is RunStatus.FAILED
    assert run.attempts == 3 == run.max_attempts
    assert run.error.type == "ValueError"
    assert run.error.message == "attempt 3 fails"
    assert "attempt 3 fails" in run.error.stack

    # randomize=False: delay(n) = min_delay * factor ** (n - 1) exactly, i.e. 0.5s then 1.5s.
    retrying = [m for m in _status_messages(client, handle.id) if "retrying in" in m]
    assert [re.search(r"retrying in ([\d.]+)s", m).group(1) for m in retrying] == ["0.50", "1.50"]
    times = [float(line.split()[1]) for line in lines(runtime.scratch / f"backoff-{handle.id}")]
    assert len(times) == 3
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert first_gap >= 0.45 and second_gap >= 1.45, (first_gap, second_gap)
    assert second_gap > first_gap


def test_backoff_is_jittered_by_default(client):
    run = _finishes(client, client.trigger("jittered", {}).id)
    assert run.status is RunStatus.FAILED and run.attempts == 4
    delays = [float(re.search(r"retrying in ([\d.]+)s", m).group(1))
              for m in _status_messages(client, run.id) if "retrying in" in m]
    bases = [0.2, 0.4, 0.8]
    assert len(delays) == 3
    assert all(0.75 * base - 0.01 <= delay <= 1.25 * base + 0.01 for delay, base in zip(delays, bases, strict=True))
    assert delays != bases, "randomize=True (the default) jitters each delay"


def test_abort_error_skips_the_remaining_attempts(client):
    run = _finishes(client, client.trigger("aborts", {}).id)
    assert run.status is RunStatus.FAILED
    assert run.attempts == 1
    assert run.max_attempts == 5
    assert run.error.type.endswith("AbortTaskRunError")
    assert run.error.message == "not worth retrying"


def test_trigger_max_attempts_overrides_the_task_policy(client):
    once = client.trigger("always-fails", {}, trigger_options(max_attempts=1))
    thrice = client.trigger("always-fails", {}, trigger_options(max_attempts=3))
    default = client.trigger("always-fails", {})
    for handle, expected in ((once, 1), (thrice, 3), (default, 2)):
        run = _finishes(client, handle.id)
        assert run.status is RunStatus.FAILED
        assert (run.attempts, run.max_attempts) == (expected, expected)
        assert run.error.type == "RuntimeError" and run.error.message == "boom"


# --- max_duration ---------------------------------------------------------------------------


def test_max_duration_ends_the_run_as_timed_out(client):
    started = time.monotonic()
    run = _finishes(client, client.trigger("busy", {"seconds": 30}).id)
    assert run.status is RunStatus.TIMED_OUT
    assert run.attempts == 1, "a timed-out run is not retried"
    assert run.error is not None and "max_duration" in run.error.message
    assert time.monotonic() - started < 25, "the attempt was stopped, not waited for"
    # The slot is free again: the next run executes.
    assert _finishes(client, client.trigger("noop", {}).id).status is RunStatus.COMPLETED


def test_max_duration_counts_execution_not_time_in_the_queue(make_runtime):
    runtime = make_runtime(slots=1)
    client = runtime.client()
    blocker = client.trigger("gate", {"name": "hold"})
    wait_for(lambda: (runtime.scratch / "gate-hold").exists(), message="the blocker to start")
    short = client.trigger("busy", {"seconds": 0.2})
    time.sleep(1.5)  # longer than busy's max_duration of 1s, spent queued
    assert client.retrieve_run(short.id).status is RunStatus.QUEUED
    (runtime.scratch / "open-hold").touch()
    assert _finishes(client, blocker.id).status is RunStatus.COMPLETED
    run = _finishes(client, short.id)
    assert run.status is RunStatus.COMPLETED, run.error


def test_trigger_max_duration_applies_to_any_task(client):
    run = _finishes(client, client.trigger("sleeper", {"seconds": 30}, trigger_options(max_duration=1)).id)
    assert run.status is RunStatus.TIMED_OUT
    assert run.max_duration == 1


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_terminates_the_task_process_and_runs_its_cleanup(make_runtime):
    runtime = make_runtime(slots=3)
    client = runtime.client()
    # An async task whose `finally` is plain, one whose `finally` awaits, and a sync task.
    sleeper = client.trigger("sleeper", {"seconds": 60})
    awaiting = client.trigger("async-cleanup", {"seconds": 60})
    sync = client.trigger("long-first-attempt", {"seconds": 60})
    markers = {sleeper.id: (runtime.scratch / f"sleeper-{sleeper.id}", "started", "cleanup"),
               awaiting.id: (runtime.scratch / f"async-cleanup-{awaiting.id}", "started", "cleanup"),
               sync.id: (runtime.scratch / f"long-{sync.id}", None, "finally 1")}
    for run_id, (marker, started, _) in markers.items():
        wait_for(lambda m=marker, s=started: lines(m) and (s is None or s in lines(m)),
                 message=f"{run_id} to start")
    for run_id in markers:
        assert client.cancel_run(run_id).status is RunStatus.CANCELED
    for run_id, (marker, _, cleanup) in markers.items():
        wait_for(lambda m=marker, c=cleanup: c in lines(m), timeout=15, message=f"the finally block of {run_id}")
        run = client.retrieve_run(run_id)
        assert run.status is RunStatus.CANCELED
        assert run.output is None and run.attempts == 1
        assert any("cancel" in m for m in _status_messages(client, run_id))
    assert "done 1" not in lines(markers[sync.id][0])
    # The slots are free again.
    handles = [client.trigger("noop", {}) for _ in range(3)]
    assert all(_finishes(client, h.id).status is RunStatus.COMPLETED for h in handles)


def test_cancel_kills_a_process_that_ignores_sigterm(runtime, client):
    handle = client.trigger("stubborn", {})
    marker = runtime.scratch / f"stubborn-{handle.id}"
    started = wait_for(lambda: [line for line in lines(marker) if line.startswith("started")],
                       message="the stubborn task to start")
    pid = int(started[0].split()[1])
    client.cancel_run(handle.id)
    wait_for(lambda: "sigterm" in lines(marker), timeout=15, message="SIGTERM first")
    assert not process_gone(pid)
    wait_for(lambda: process_gone(pid), timeout=20, message="SIGKILL after the grace period")
    assert client.retrieve_run(handle.id).status is RunStatus.CANCELED


def test_cancel_a_queued_run_removes_it_from_the_queue(runtime, client):
    first = client.trigger("one-at-a-time", {"seconds": 1.0})
    wait_for(lambda: f"start {first.id}" in (runtime.scratch / "limited").read_text()
             if (runtime.scratch / "limited").exists() else False, message="the first run to start")
    second = client.trigger("one-at-a-time", {"seconds": 0.1})
    assert client.retrieve_run(second.id).status is RunStatus.QUEUED
    canceled = client.cancel_run(second.id)
    assert canceled.status is RunStatus.CANCELED
    third = client.trigger("one-at-a-time", {"seconds": 0.1})
    assert _finishes(client, first.id).status is RunStatus.COMPLETED
    assert _finishes(client, third.id).status is RunStatus.COMPLETED
    run = client.retrieve_run(second.id)
    assert run.status is RunStatus.CANCELED
    assert run.attempts == 0
    assert second.id not in (runtime.scratch / "limited").read_text()


def test_cancel_of_a_finished_run_changes_nothing(client):
    run = _finishes(client, client.trigger("echo", {"x": 1}).id)
    assert run.status is RunStatus.COMPLETED
    events = client.run_events(run.id)
    after = client.cancel_run(run.id)
    assert after.status is RunStatus.COMPLETED
    assert after.output == run.output
    assert after.completed_at == run.completed_at
    assert client.retrieve_run(run.id).status is RunStatus.COMPLETED
    assert client.run_events(run.id) == events

    failed = _finishes(client, client.trigger("aborts", {}).id)
    assert client.cancel_run(failed.id).status is RunStatus.FAILED


# --- crashes --------------------------------------------------------------------------------


def test_a_process_that_exits_crashes_the_attempt_and_is_retried(runtime, client):
    handle = client.trigger("crashes", {})
    run = _finishes(client, handle.id)
    assert run.status is RunStatus.CRASHED
    assert run.attempts == 2
    assert lines(runtime.scratch / f"crash-{handle.id}") == ["1", "2"]
    assert "exited with code 13" in run.error.message
    messages = _status_messages(client, handle.id)
    assert any("attempt 1 crashed" in m and "code 13" in m for m in messages), messages
    # The runtime lives on.
    assert runtime.process.poll() is None
    assert _finishes(client, client.trigger("noop", {}).id).status is RunStatus.COMPLETED


def test_a_segfault_is_reported_as_a_crash(runtime, client):
    handle = client.trigger("crashes", {"how": "segfault"})
    run = _finishes(client, handle.id)
    assert run.status is RunStatus.CRASHED
    assert run.attempts == 2
    assert "SIGSEGV" in run.error.message
    assert any("SIGSEGV" in m for m in _status_messages(client, handle.id))


def test_a_frozen_process_is_killed_by_the_heartbeat_watchdog(make_runtime):
    runtime = make_runtime(extra_env={"OUTLAST_HEARTBEAT_TIMEOUT": "2"})
    client = runtime.client()
    handle = client.trigger("crashes", {"how": "freeze"})
    run = _finishes(client, handle.id, timeout=60)
    assert run.status is RunStatus.CRASHED
    assert run.attempts == 2
    assert lines(runtime.scratch / f"crash-{handle.id}") == ["1", "2"]
    assert "heartbeat" in run.error.message
    assert any("heartbeat" in m for m in _status_messages(client, handle.id))
    assert _finishes(client, client.trigger("noop", {}).id).status is RunStatus.COMPLETED


def test_a_task_that_runs_long_is_not_mistaken_for_frozen(make_runtime):
    runtime = make_runtime(extra_env={"OUTLAST_HEARTBEAT_TIMEOUT": "2"})
    client = runtime.client()
    run = _finishes(client, client.trigger("sleeper", {"seconds": 4}).id)
    assert run.status is RunStatus.COMPLETED
    assert run.attempts == 1
    assert run.output == "slept"
