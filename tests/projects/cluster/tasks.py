"""Tasks of the cluster tests (tests/cluster/). Side effects go to files under OUTLAST_TEST_SCRATCH,
which every node shares (one filesystem), so a test sees what each attempt did wherever it ran."""

from __future__ import annotations

import os
import time
from pathlib import Path

from outlast import logger, metadata, task, wait

SCRATCH = Path(os.environ.get("OUTLAST_TEST_SCRATCH", "/tmp"))
RETRIES = {"max_attempts": 3, "min_delay": 0.1, "factor": 1, "randomize": False}


def _mark(name: str, text: str) -> None:
    with open(SCRATCH / name, "a") as handle:
        handle.write(text + "\n")


@task(id="held-first-attempt", retry=RETRIES)
def held_first_attempt(payload, ctx):
    """The first attempt waits for the test to create `<run id>.release`; later ones finish at once."""
    _mark(f"{ctx.run_id}.started", str(ctx.attempt))
    if ctx.attempt == 1:
        while not (SCRATCH / f"{ctx.run_id}.release").exists():
            time.sleep(0.05)
    metadata.set("finished_attempt", ctx.attempt)
    logger.info(f"finished on attempt {ctx.attempt}")
    _mark(f"{ctx.run_id}.done", str(ctx.attempt))
    return {"attempt": ctx.attempt}


@task(id="count", retry=RETRIES)
def count(payload, ctx):
    """Runs without waiting for anything: count to `to`, recording progress in a file every `every`
    steps (a side effect per step, so a run that starts over shows it: its progress would go back),
    and sleeping `pause` seconds there (so that a test's runs last a while without taking the CPU);
    at step `gate_at` it goes on only once the file `gate` is gone (still running, not at a wait)."""
    progress = SCRATCH / f"{ctx.run_id}.progress"
    total = 0
    for step in range(1, payload["to"] + 1):
        total += step
        if step % payload["every"] == 0:
            _mark(progress.name, f"{ctx.attempt} {step}")
            time.sleep(payload.get("pause", 0))
        if step == payload.get("gate_at"):
            while (SCRATCH / "gate").exists():
                time.sleep(0.05)
    _mark(f"{ctx.run_id}.done", str(ctx.attempt))
    return {"total": total, "attempt": ctx.attempt}


@task(id="ticker", retry=RETRIES)
def ticker(payload, ctx):
    """Holds `ballast_mb` MiB of random bytes and writes the wall-clock time to `<run id>.ticks` every
    `interval` seconds, `ticks` times: the largest gap between two ticks is how long it was frozen
    (bench/migration.py)."""
    ballast = os.urandom(payload.get("ballast_mb", 0) << 20)
    for _ in range(payload["ticks"]):
        _mark(f"{ctx.run_id}.ticks", repr(time.time()))
        time.sleep(payload["interval"])
    return {"ballast": len(ballast), "attempt": ctx.attempt}


@task(id="paced", max_duration=4, checkpoint_after=1, retry={"max_attempts": 1})
def paced(payload, ctx):
    """Runs `before` seconds, waits `wait` seconds (a timer longer than its checkpoint_after: checkpointed
    at once, frozen), then runs `after` seconds. Its max_duration (4 s) counts the running only: time
    frozen does not count, time run before the checkpoint does (sleeping is running: it is not frozen)."""
    time.sleep(payload["before"])
    wait.for_(seconds=payload["wait"])
    _mark(f"{ctx.run_id}.resumed", str(os.getpid()))
    time.sleep(payload["after"])
    return {"attempt": ctx.attempt}
