"""The claim gate (worker/backpressure.py) on its own: why it holds claims, and its settings."""

from __future__ import annotations

import pytest

from outlast.runtime.checkpoint.checkpointer import Checkpointer, CheckpointSupport
from outlast.runtime.worker import backpressure
from outlast.runtime.worker.backpressure import ClaimGate


def support(queued: int, concurrency: int = 2) -> CheckpointSupport:
    checkpoints = CheckpointSupport(checkpointer=Checkpointer.__new__(Checkpointer))
    checkpoints.checkpointer.concurrency = concurrency  # type: ignore[union-attr]
    checkpoints.queued = queued
    return checkpoints


def test_claims_wait_while_more_processes_wait_for_a_dump_than_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backpressure, "available_memory_bytes", lambda: 10**12)
    assert ClaimGate(support(4), max_queued=0, min_available=0).reason() == ""  # default: twice the turns
    gate = ClaimGate(support(5), max_queued=0, min_available=0)
    assert "5 processes wait for their checkpoint (more than 4)" in gate.reason()
    assert gate.holding() and gate.held_times == 1
    gate.checkpoints.queued = 1
    assert not gate.holding()


def test_claims_wait_while_memory_is_low(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backpressure, "available_memory_bytes", lambda: 100_000_000)
    assert "only 100 MB of memory available" in ClaimGate(support(0), min_available=200_000_000).reason()
    assert ClaimGate(support(0), min_available=50_000_000).reason() == ""
    assert ClaimGate(support(0), min_available=200_000_000).reason(holds_attempts=False) == "", (
        "a node holding nothing claims even when memory is low: else it could never get out of it")
    assert ClaimGate(CheckpointSupport(), min_available=0).reason() == "", "no checkpointer: no dump queue"


def test_bad_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAST_MIN_AVAILABLE_MB", "lots")
    with pytest.raises(ValueError, match="OUTLAST_MIN_AVAILABLE_MB must be a whole number"):
        ClaimGate(support(0))
    monkeypatch.setenv("OUTLAST_MIN_AVAILABLE_MB", "1")
    monkeypatch.setenv("OUTLAST_MAX_QUEUED_CHECKPOINTS", "-1")
    with pytest.raises(ValueError, match="OUTLAST_MAX_QUEUED_CHECKPOINTS must be at least 0"):
        ClaimGate(support(0))


def test_available_memory_is_read_from_meminfo() -> None:
    available = backpressure.available_memory_bytes()
    assert available is not None and available > 0
