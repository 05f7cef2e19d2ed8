"""Tasks of the checkpoint benchmark (bench/checkpoints.py): each waits for a token at once.

`checkpoint_after=0` makes the supervisor checkpoint the process as soon as it waits. Each task
returns the wall-clock time just before its wait began and just after it returned, so the
benchmark learns both without a side channel: the numbers travel inside the checkpointed process.
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

from outlast import task, wait

BIG_BYTES = 100 * 2**20


def _report_pid(payload: dict) -> None:
    """Tell the benchmark which host process holds this run (it sums their memory while they wait):
    its PID and start time (so a later process reusing the PID is not mistaken for it). In a PID
    namespace os.getpid() is 1; /proc/self/status's NSpid starts with the host's PID."""
    if payload.get("pid_file"):
        status = Path("/proc/self/status").read_text()
        host_pid = next(line.split()[1] for line in status.splitlines() if line.startswith("NSpid:"))
        stat = Path("/proc/self/stat").read_text()
        started = stat[stat.rfind(")") + 2:].split()[19]
        Path(payload["pid_file"]).write_text(f"{host_pid}:{started}")


@task(id="wait-small", checkpoint_after=0)
async def wait_small(payload: dict) -> dict:
    """A task with next to no state of its own: the interpreter and the SDK."""
    _report_pid(payload)
    before = time.time()
    result = await wait.for_token(payload["token"])
    after = time.time()
    return {"before": before, "after": after, "ok": result.ok and result.output == payload["token"]}


@task(id="wait-big", checkpoint_after=0)
async def wait_big(payload: dict) -> dict:
    """Holds 100 MiB of random bytes (the worst case for compression) across the wait, and proves
    afterwards that they came back intact."""
    big = bytearray(os.urandom(BIG_BYTES))
    checksum = zlib.crc32(big)
    before = time.time()
    result = await wait.for_token(payload["token"])
    after = time.time()
    intact = len(big) == BIG_BYTES and zlib.crc32(big) == checksum
    return {"before": before, "after": after, "ok": result.ok and result.output == payload["token"] and intact}
