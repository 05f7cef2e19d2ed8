"""Tasks the end-to-end tests run. Side effects go to files under OUTLAST_TEST_SCRATCH."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from pathlib import Path

from pydantic import BaseModel

from outlast import AbortTaskRunError, logger, metadata, queue, schema_task, task

SCRATCH = Path(os.environ.get("OUTLAST_TEST_SCRATCH", "/tmp"))
limited = queue("limited", concurrency_limit=1)


def _mark(name: str, text: str = "") -> None:
    with open(SCRATCH / name, "a") as handle:
        handle.write(text + "\n")


@task(id="echo")
async def echo(payload, ctx):
    return {"payload": payload, "run_id": ctx.run_id, "attempt": ctx.attempt, "tags": ctx.tags}


@task(id="noop")
def noop(payload):
    return None


@task(id="sync-echo")
def sync_echo(payload, ctx):
    return {"payload": payload, "task": ctx.task}


@task(id="flaky", retry={"max_attempts": 3, "min_delay": 0.2, "factor": 2, "randomize": False})
def flaky(payload, ctx):
    _mark(f"flaky-{ctx.run_id}", f"{ctx.attempt} {time.time()}")
    if ctx.attempt < payload.get("succeed_on", 3):
        raise ValueError(f"attempt {ctx.attempt} fails")
    return {"attempt": ctx.attempt}


@task(id="always-fails", retry={"max_attempts": 2, "min_delay": 0.1, "randomize": False})
def always_fails(payload):
    raise RuntimeError("boom")


@task(id="aborts", retry={"max_attempts": 5, "min_delay": 0.1})
def aborts(payload):
    raise AbortTaskRunError("not worth retrying")


@task(id="crashes", retry={"max_attempts": 2, "min_delay": 0.1, "randomize": False})
def crashes(payload, ctx):
    _mark(f"crash-{ctx.run_id}", str(ctx.attempt))
    # Real faults, not signals to itself: PID 1 of a PID namespace ignores those.
    if payload.get("how") == "segfault":
        ctypes.string_at(0)
    if payload.get("how") == "freeze":
        ctypes.PyDLL(None).pause()  # stuck in C code holding the GIL: no thread runs, no heartbeat
    os._exit(13)


@task(id="sleeper")
async def sleeper(payload, ctx):
    _mark(f"sleeper-{ctx.run_id}", "started")
    try:
        await asyncio.sleep(payload.get("seconds", 60))
    finally:
        _mark(f"sleeper-{ctx.run_id}", "cleanup")
    return "slept"


@task(id="busy", max_duration=1)
def busy(payload):
    time.sleep(payload.get("seconds", 30))


@task(id="observed")
def observed(payload, ctx):
    print("printed line")
    logger.info("structured", answer=42)
    metadata.set("stage", "one")
    metadata.append("seen", "a")
    metadata.append("seen", "b")
    metadata.increment("count", 2)
    metadata.increment("count")
    return {"version": ctx.version, "env": ctx.env}


@task(id="one-at-a-time", queue=limited)
def one_at_a_time(payload, ctx):
    _mark("limited", f"start {ctx.run_id} {time.time()}")
    time.sleep(payload.get("seconds", 0.3))
    _mark("limited", f"end {ctx.run_id} {time.time()}")


@task(id="tenant-work", queue={"name": "tenants", "concurrency_limit": 1})
def tenant_work(payload, ctx):
    _mark("tenants", f"{payload['tenant']} {time.time()}")
    time.sleep(payload.get("seconds", 0.05))


class Order(BaseModel):
    order_id: int
    email: str


@schema_task(id="place-order", schema=Order)
def place_order(payload: Order, ctx):
    return {"order_id": payload.order_id, "type": type(payload).__name__}


# --- execution, failures, concurrency and durability tests -------------------------------------


def _host_pid() -> int:
    """The PID as the host sees it: a checkpointable task process is PID 1 of its own PID namespace."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[1])
    return _host_pid()


def _describe(ctx):
    return {"run_id": ctx.run_id, "attempt": ctx.attempt, "task": ctx.task, "tags": ctx.tags,
            "version": ctx.version, "env": ctx.env, "pid": _host_pid()}


@task(id="whoami")
def whoami(payload, ctx):
    return _describe(ctx)


@task(id="whoami-async")
async def whoami_async(payload, ctx):
    await asyncio.sleep(0.01)
    return _describe(ctx)


@task(id="gate")
def gate(payload, ctx):
    """Blocks until the test creates `open-<name>` in the scratch directory."""
    name = payload.get("name", ctx.run_id)
    _mark(f"gate-{name}", f"started {_host_pid()}")
    metadata.set("progress", "waiting")
    logger.info("waiting at the gate", name=name)
    deadline = time.monotonic() + payload.get("timeout", 60)
    while not (SCRATCH / f"open-{name}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {name} never opened")
        time.sleep(0.05)
    metadata.set("progress", "through")
    _mark("starts", f"gate-{name}")
    return name


@task(id="ordered")
def ordered(payload, ctx):
    _mark("starts", payload["name"])


@task(id="backoff", retry={"max_attempts": 3, "min_delay": 0.5, "factor": 3, "randomize": False})
def backoff(payload, ctx):
    _mark(f"backoff-{ctx.run_id}", f"{ctx.attempt} {time.time()}")
    raise ValueError(f"attempt {ctx.attempt} fails")


@task(id="stubborn")
def stubborn(payload, ctx):
    """Ignores SIGTERM (records it): only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, lambda *_: _mark(f"stubborn-{ctx.run_id}", "sigterm"))
    _mark(f"stubborn-{ctx.run_id}", f"started {_host_pid()}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)


@task(id="keyed-span", queue={"name": "keyed-spans", "concurrency_limit": 1})
def keyed_span(payload, ctx):
    _mark("spans", f"start {payload['tenant']} {ctx.run_id} {time.time()}")
    time.sleep(payload.get("seconds", 0.4))
    _mark("spans", f"end {payload['tenant']} {ctx.run_id} {time.time()}")


@task(id="fair-work")
def fair_work(payload, ctx):
    _mark("starts", payload["tenant"])


@task(id="counted", retry={"max_attempts": 5, "min_delay": 0.1, "randomize": False})
def counted(payload, ctx):
    """Appends `<run id> <attempt>` to `completed` when it succeeds."""
    _mark("attempts", f"{ctx.run_id} {ctx.attempt} {_host_pid()}")
    time.sleep(payload.get("seconds", 0.1))
    _mark("completed", f"{ctx.run_id} {ctx.attempt}")
    return ctx.attempt


@task(id="long-first-attempt", retry={"max_attempts": 3, "min_delay": 0.1, "randomize": False})
def long_first_attempt(payload, ctx):
    """Attempt 1 runs long (to be interrupted); later attempts finish at once."""
    _mark(f"long-{ctx.run_id}", f"start {ctx.attempt} {_host_pid()}")
    try:
        if ctx.attempt == 1:
            time.sleep(payload.get("seconds", 60))
    finally:
        _mark(f"long-{ctx.run_id}", f"finally {ctx.attempt}")
    _mark(f"long-{ctx.run_id}", f"done {ctx.attempt}")
    return ctx.attempt


@task(id="async-cleanup")
async def async_cleanup(payload, ctx):
    """Its cleanup awaits, as closing an async client does."""
    _mark(f"async-cleanup-{ctx.run_id}", "started")
    try:
        await asyncio.sleep(payload.get("seconds", 60))
    finally:
        await asyncio.sleep(0.05)
        _mark(f"async-cleanup-{ctx.run_id}", "cleanup")
    return "done"


@task(id="jittered", retry={"max_attempts": 4, "min_delay": 0.2, "factor": 2})
def jittered(payload):
    raise ValueError("always")
