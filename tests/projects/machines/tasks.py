"""Tasks that push against their machine preset: memory, CPU, processes, and a wait. Used by tests/machines/."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

from outlast import task, wait


def own_cgroup(controller: str) -> Path:
    """This process's cgroup directory for `controller` (v1 here; the tests check the host has v1)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    raise RuntimeError(f"no {controller} cgroup")


def limits() -> dict:
    """The limits of the cgroups this process is in, read from the kernel."""
    return {
        "memory": int((own_cgroup("memory") / "memory.limit_in_bytes").read_text()),
        "cpu_quota": int((own_cgroup("cpu") / "cpu.cfs_quota_us").read_text()),
        "pids": (own_cgroup("pids") / "pids.max").read_text().strip(),
    }


@task(id="hog", machine="micro", retry={"max_attempts": 2, "min_delay": 0, "max_delay": 0,
                                        "out_of_memory": {"machine": "small-2x"}})
def hog(payload: dict, ctx) -> dict:
    """Touches `mb` megabytes: past micro's 256 MB it is killed, on small-2x's 1 GB it finishes."""
    held = []
    for _ in range(payload["mb"]):
        chunk = bytearray(1024 * 1024)
        chunk[::4096] = b"x" * len(chunk[::4096])  # every page written: really resident
        held.append(chunk)
    return {"machine": ctx.machine, "mb": len(held), "limits": limits()}


@task(id="spin", machine="micro")
def spin(payload: dict) -> dict:
    """Burns CPU for `seconds` of wall time."""
    deadline = time.monotonic() + payload["seconds"]
    count = 0
    while time.monotonic() < deadline:
        count += 1
    return {"loops": count, "limits": limits()}


@task(id="fork-bomb", machine="micro")
def fork_bomb(payload: dict) -> dict:
    """Forks until the kernel says no (the pid limit), then ends its children."""
    children = []
    refused = None
    try:
        for _ in range(payload.get("at_most", 10_000)):
            child = os.fork()
            if child == 0:
                time.sleep(60)
                os._exit(0)
            children.append(child)
    except OSError as exc:
        refused = errno.errorcode.get(exc.errno, str(exc.errno))
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    return {"forked": len(children), "refused": refused, "pids_max": limits()["pids"]}


@task(id="limited-wait", machine="micro")
async def limited_wait(payload: dict) -> dict:
    """Reads its limits and host pid, waits (checkpointed), reads them again."""
    deadline = time.monotonic() + payload.get("spin", 0)  # CPU time before the checkpoint
    while time.monotonic() < deadline:
        pass
    before = {"limits": limits(), "host_pid": _host_pid()}
    await wait.for_(seconds=payload.get("seconds", 3))
    return {"before": before, "after": {"limits": limits(), "host_pid": _host_pid()}}


def _host_pid() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[1])
    return os.getpid()


@task(id="gate", machine="micro")
def gate(payload: dict) -> str:
    """Holds its slot until the test creates `open-<name>` in the scratch directory."""
    scratch = Path(os.environ["OUTLAST_TEST_SCRATCH"])
    deadline = time.monotonic() + 60
    while not (scratch / f"open-{payload['name']}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return payload["name"]
