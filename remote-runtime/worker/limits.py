"""Machine limits on this node: each task process in a cgroup sized by its attempt's machine preset.

Every task process gets a cgroup of its own when it is spawned (before it imports any user code
where it is started from scratch; a fork of the fork server is moved in before it gets an
attempt) and loses it when it exits. When an attempt starts, the cgroup is set to the attempt's
preset: memory with no swap, a CPU quota (cfs quota / cpu.max), a pid limit. The cgroup is the
process's rather than the attempt's because cgroup v1 never moves memory already charged with a
process: a fresh cgroup per attempt of a reused process would not count what it holds.

An attempt that the cgroup's OOM killer ended is reported as `TaskOutOfMemoryError` with its
preset, limit and peak; CPU time and peak memory are reported with every attempt.

`OUTLAST_LIMITS=off` runs without limits; `auto` (the default) enforces them where the host lets
this process create cgroups, and says loudly where it does not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import uuid
from dataclasses import dataclass
from pathlib import Path

from outlast.wire import TaskRunError
from outlast.wire.machines import OUT_OF_MEMORY_ERROR as OUT_OF_MEMORY
from outlast.wire.machines import Machine

from . import cgroups, isolation
from .cgroups import CgroupError, TaskCgroup, Usage

log = logging.getLogger("outlast.supervisor")
MACHINE_TOO_LARGE = "MachineTooLarge"
NEEDED = ("memory", "cpu", "pids")
KEPT_EXIT_USAGES = 1000


@dataclass(frozen=True)
class NodeSize:
    """What this node offers attempts: vCPUs and memory (presets are counted against both)."""

    cpus: float
    memory_bytes: int

    @classmethod
    def of_host(cls) -> NodeSize:
        cpus = float(os.environ.get("OUTLAST_NODE_CPUS") or len(os.sched_getaffinity(0)))
        memory = os.environ.get("OUTLAST_NODE_MEMORY_GB")
        return cls(cpus, int(float(memory) * 2**30) if memory else _host_memory())

    def refuses(self, machine: Machine) -> str | None:
        """Why `machine` can never run here (None: it fits an empty node)."""
        if machine.cpus <= self.cpus + 1e-9 and machine.memory_bytes <= self.memory_bytes:
            return None
        return (f"machine {machine.describe()} is larger than this node ({self.cpus:g} vCPU, "
                f"{self.memory_bytes / 2**30:.1f} GB); choose a smaller preset or run it on a larger node")


def _host_memory() -> int:
    """The host's memory, or the runtime's own cgroup limit if that is lower (a node in a container)."""
    total = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:")), 0)
    with contextlib.suppress(OSError, ValueError):
        memory = cgroups.detect()[0].get("memory")
        if memory is not None:
            limit = (memory.path(memory.own) / ("memory.limit_in_bytes" if memory.version == 1 else "memory.max"))
            text = limit.read_text().strip()
            if text.isdigit():
                total = min(total, int(text))
    return total


@dataclass
class Measured:
    """One attempt's use of its process's cgroup, from the counters at its start."""

    cpu_ms: int | None
    peak_bytes: int | None
    out_of_memory: bool
    limit_bytes: int | None


class Limits:
    """The node's task cgroups: created, sized, measured and removed; and the node's size."""

    def __init__(self, mode: str = "auto", pids_max: int = 512, node: NodeSize | None = None,
                 devices: bool | None = None) -> None:
        """`devices`: filter task processes' devices (cgroup v1); None: where task processes are isolated
        (OUTLAST_ISOLATION), not in `process` mode, whose tasks have the host's devices as before."""
        self.node = node or NodeSize.of_host()
        self.pids_max = pids_max
        self.problem = ""  # why limits are not enforced here ("" where they are)
        self.hierarchies: dict[str, cgroups.Hierarchy] = {}
        # One parent per supervisor: a runtime process may run two (working copy and deployed versions).
        self._parent = f"{cgroups.PARENT}/{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._by_pid: dict[int, TaskCgroup] = {}
        self._exit_usage: dict[int, Usage] = {}
        self._sized: dict[int, Machine] = {}  # the preset each process's cgroup is sized for now
        if mode == "off":
            self.problem = "OUTLAST_LIMITS=off"
            return
        try:
            found, missing = cgroups.detect()
        except OSError as exc:
            found, missing = {}, {c: str(exc) for c in NEEDED}
        if lacking := [f"{c}: {missing[c]}" for c in NEEDED if c in missing]:
            self.problem = "cgroup controllers missing (" + "; ".join(lacking) + ")"
        elif problem := self._try_parent(found):
            self.problem = problem
        else:
            if devices is None:
                try:
                    devices = isolation.mode_from(os.environ.get("OUTLAST_ISOLATION")) != "process"
                except ValueError:  # said where the mode is read (startup, doctor); filtered meanwhile
                    devices = True
            self.hierarchies = {c: h for c, h in found.items() if c != "devices" or devices}
            raise_open_files_limit()  # each task cgroup keeps its counter files open

    @property
    def enforced(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        if self.problem:
            return f"machine limits NOT enforced: {self.problem}"
        versions = ", ".join(f"{c} v{h.version}" for c, h in self.hierarchies.items())
        devices = "devices deny-all but null, zero, full, random, urandom, tty, ptmx, ptys" \
            if "devices" in self.hierarchies else "devices not filtered"
        return f"machine limits enforced with cgroups ({versions}); {devices}"

    def _try_parent(self, found: dict[str, cgroups.Hierarchy]) -> str:
        """Make this supervisor's parent cgroup, clearing what dead supervisors left; a problem or ""."""
        self._remove_stale(found)
        probe = TaskCgroup(found, f"{self._parent}/probe")
        try:
            probe.create()
        except CgroupError as exc:
            return f"cannot create task cgroups: {exc}"
        finally:
            probe.remove(attempts=1)
        return ""

    def _remove_stale(self, found: dict[str, cgroups.Hierarchy]) -> None:
        for hierarchy in found.values():
            base = hierarchy.path(hierarchy.own) / cgroups.PARENT
            for entry in base.glob("*") if base.is_dir() else ():
                pid = entry.name.split("-", 1)[0]
                if entry.is_dir() and pid.isdigit() and not cgroups.pid_alive(int(pid)):
                    for child in entry.iterdir():  # task cgroups: one level, emptied when their process died
                        if child.is_dir():
                            _rmdir(child)
                    _rmdir(entry)

    # --- one task process's cgroup ---------------------------------------------------------

    def create(self) -> TaskCgroup | None:
        """A new task cgroup, unlimited until an attempt sizes it (None where limits are not enforced)."""
        if not self.enforced:
            return None
        name = uuid.uuid4().hex[:16]
        cgroup = TaskCgroup(self.hierarchies, f"{self._parent}/{name}")
        cgroup.create()
        return cgroup

    def sized(self, machine: Machine) -> TaskCgroup | None:
        """A new task cgroup with `machine`'s limits (a restored process's, before criu restores it)."""
        cgroup = self.create()
        if cgroup is not None:
            self.size(cgroup, machine)
        return cgroup

    def size(self, cgroup: TaskCgroup, machine: Machine) -> None:
        """Set `machine`'s limits; CgroupError if the process already uses more than it allows."""
        cgroup.limit(machine.cpus, machine.memory_bytes, self.pids_max)

    def adopt(self, pid: int, cgroup: TaskCgroup | None, machine: Machine | None = None) -> None:
        """Track `pid` as living in `cgroup` (it was placed there, or criu restored it there sized for `machine`)."""
        if cgroup is not None:
            self._by_pid[pid] = cgroup
            if machine is not None:
                self._sized[pid] = machine

    def of(self, pid: int) -> TaskCgroup | None:
        return self._by_pid.get(pid)

    def exited(self, pid: int) -> TaskCgroup | None:
        """`pid` exited: keep its last counters for its attempt's report; returns its cgroup, to remove
        (`TaskCgroup.remove`, which may wait a moment for the rest of its processes to go)."""
        cgroup = self._by_pid.pop(pid, None)
        self._sized.pop(pid, None)
        if cgroup is not None:
            self._exit_usage[pid] = cgroup.usage()
            while len(self._exit_usage) > KEPT_EXIT_USAGES:  # of processes no attempt asked about (idle ones)
                del self._exit_usage[next(iter(self._exit_usage))]
        return cgroup

    def usage(self, pid: int) -> Usage | None:
        """The counters of `pid`'s cgroup now, or as they were when it exited (read once)."""
        if (cgroup := self._by_pid.get(pid)) is not None:
            return cgroup.usage()
        return self._exit_usage.pop(pid, None)

    def start_attempt(self, pid: int, machine: Machine) -> Usage | None:
        """Size `pid`'s cgroup for an attempt on `machine`; the counters its report is measured from."""
        cgroup = self._by_pid.get(pid)
        if cgroup is None:
            return None
        if self._sized.get(pid) != machine:  # a reused process on the same preset keeps its limits
            self.size(cgroup, machine)
            self._sized[pid] = machine
        cgroup.reset_peak()
        return cgroup.usage()

    def close(self) -> None:
        for pid in list(self._by_pid):
            if (cgroup := self.exited(pid)) is not None and not cgroup.remove():
                log.warning("task cgroup %s still busy at shutdown; left in place", cgroup.relative)
        self._exit_usage.clear()
        for hierarchy in self.hierarchies.values():  # and those whose removal is still under way
            parent = hierarchy.path(hierarchy.own) / self._parent
            for child in parent.iterdir() if parent.is_dir() else ():
                if child.is_dir():
                    _rmdir(child)
            _rmdir(parent)


def raise_open_files_limit(wanted: int = 65_536) -> None:
    """Raise the soft limit on open files towards the hard one (a service's soft limit is often 1,024;
    every task process's cgroup holds five counter files open, besides its control connection)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _rmdir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def measure(start: Usage | None, end: Usage | None) -> Measured | None:
    """What an attempt used between two readings of its process's cgroup."""
    if start is None or end is None:
        return None
    cpu_ms = (end.cpu_ns - start.cpu_ns) // 1_000_000 if end.cpu_ns is not None and start.cpu_ns is not None else None
    return Measured(cpu_ms=max(0, cpu_ms) if cpu_ms is not None else None, peak_bytes=end.peak_bytes,
                    out_of_memory=end.oom_kills > start.oom_kills, limit_bytes=end.memory_limit)


def carried(measured: Measured | None, before: dict[str, int]) -> dict[str, int]:
    """An attempt's CPU time and peak so far: what its current process used plus what `before` says
    its earlier incarnations (before a checkpoint) used. Keys: cpu_ms, peak_memory_bytes."""
    total = dict(before)
    if measured is not None and measured.cpu_ms is not None:
        total["cpu_ms"] = total.get("cpu_ms", 0) + measured.cpu_ms
    if measured is not None and measured.peak_bytes is not None:
        total["peak_memory_bytes"] = max(total.get("peak_memory_bytes", 0), measured.peak_bytes)
    return total


def out_of_memory_error(machine: Machine, measured: Measured) -> TaskRunError:
    """The error of an attempt its cgroup's OOM killer ended: preset, limit and peak."""
    limit = measured.limit_bytes or machine.memory_bytes
    peak = measured.peak_bytes
    return TaskRunError(type=OUT_OF_MEMORY, message=(
        f"the task process ran out of memory on machine {machine.name}: limit {limit / 2**20:.0f} MiB, "
        f"peak {peak / 2**20:.0f} MiB" if peak is not None else
        f"the task process ran out of memory on machine {machine.name}: limit {limit / 2**20:.0f} MiB"
    ) + "; give the task a larger machine, or retry={'out_of_memory': {'machine': ...}}")
