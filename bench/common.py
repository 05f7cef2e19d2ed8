"""Shared helpers: free ports, subprocesses that are always cleaned up, CPU accounting, statistics."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05,
               what: str = "condition", alive: Callable[[], None] | None = None) -> object:
    """Poll `predicate()` until it is truthy and return it; `TimeoutError` after `timeout` seconds.

    `alive()` is called on every round and may raise, e.g. when a service exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --- processes ------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _parent_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children in other sessions included)."""
    children, found, todo = _parent_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_identity(pid: int) -> str | None:
    """pid plus start time: tells a process apart from a later one that reuses its pid."""
    fields = _stat(pid)
    return f"{pid}:{fields[19]}" if fields else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used itself (not its waited-for children)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    pids.append(int(entry))
    return pids


def postgres_pids(database: str) -> list[int]:
    """The PostgreSQL server's shared processes plus the backends connected to `database`.

    Backends of other databases (other users of the same server) are left out.
    """
    pids = []
    for pid in pids_named("postgres"):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        words = title.split()
        is_backend = len(words) >= 4 and words[0] == "postgres:" and not words[1].endswith(":")
        if not is_backend or words[2] == database:
            pids.append(pid)
    return pids


@dataclass
class Service:
    """A benchmarked server in its own session; `stop()` ends it and every process it started."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = ROOT
    process: subprocess.Popen | None = None
    _known: set[str] = field(default_factory=set)  # identities of descendants seen so far

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}; "
                               f"log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def tree(self) -> list[int]:
        """The service's process and its live descendants (remembered for cleanup)."""
        pids = [self.pid, *descendants(self.pid)]
        self._known.update(filter(None, map(process_identity, pids)))
        return pids

    def stop(self, grace: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.tree()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        # Descendants in sessions of their own (task processes) exit on their own once their parent is
        # gone; whatever is still there shortly after is killed.
        deadline = time.monotonic() + 3
        while self._leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self._leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ValueError):
            _LIVE.remove(self)
        self.process = None

    def _leftovers(self) -> list[int]:
        pids = [int(identity.split(":")[0]) for identity in self._known]
        return [pid for pid in pids if process_identity(pid) in self._known
                and (_stat(pid) or ["Z"])[0] != "Z"]


_LIVE: list[Service] = []


def stop_all_services() -> None:
    for service in list(_LIVE):
        with contextlib.suppress(Exception):
            service.stop(grace=5)


# --- CPU accounting -------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (all CPUs, from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / CLOCK_TICKS


def background_load(seconds: float = 1.0, exclude: Iterable[int] = ()) -> float:
    """Cores kept busy by other processes over `seconds` (this process and `exclude` not counted)."""
    pids = [os.getpid(), *exclude]
    before_machine, before_ours = machine_busy_seconds(), sum(map(cpu_seconds, pids))
    time.sleep(seconds)
    ours = sum(map(cpu_seconds, pids)) - before_ours
    return max(0.0, (machine_busy_seconds() - before_machine - ours) / seconds)


def wait_for_quiet(max_wait: float, threshold: float, log: Callable[[str], None]) -> float:
    """Wait up to `max_wait` seconds for other processes to use less than `threshold` cores; the last load."""
    deadline = time.monotonic() + max_wait
    load = background_load()
    warned = False
    while load >= threshold and time.monotonic() < deadline:
        if not warned:
            log(f"other processes keep {load:.2f} cores busy; waiting up to {max_wait:.0f}s for a quieter machine")
            warned = True
        load = background_load(2.0)
    return load


@dataclass
class CpuMeter:
    """CPU seconds used by groups of processes between `start()` and `stop()`.

    `groups` maps a label to a function that lists the group's pids right now; processes that
    appear during the measurement count fully, those that vanish count up to their last sample.
    """

    groups: dict[str, Callable[[], Iterable[int]]]
    _start: dict[str, dict[str, float]] = field(default_factory=dict)
    _last: dict[str, dict[str, float]] = field(default_factory=dict)
    _t0: float = 0.0
    _self0: float = 0.0
    _machine0: float = 0.0

    def _sample(self) -> dict[str, dict[str, float]]:
        sample = {}
        for label, pids in self.groups.items():
            sample[label] = {ident: cpu_seconds(pid) for pid in pids() if (ident := process_identity(pid))}
        return sample

    def start(self) -> None:
        self._machine0 = machine_busy_seconds()
        self._start = self._sample()
        self._last = {label: dict(values) for label, values in self._start.items()}
        self._t0 = time.monotonic()
        self._self0 = _self_cpu()

    def poll(self) -> None:
        """Sample again (call now and then so short-lived processes are not missed entirely)."""
        current = self._sample()
        for label, values in current.items():
            self._last[label] = {**self._last.get(label, {}), **values}

    def stop(self) -> dict[str, float]:
        self.poll()
        wall = time.monotonic() - self._t0
        used = {"wall_s": wall, "bench client": _self_cpu() - self._self0}
        for label, values in self._last.items():
            before = self._start.get(label, {})
            used[label] = sum(value - before.get(ident, 0.0) for ident, value in values.items())
        ours = sum(value for label, value in used.items() if label != "wall_s")
        # Everything else the machine did meanwhile: other processes, and kernel work no process is charged for.
        used["rest of the machine"] = max(0.0, machine_busy_seconds() - self._machine0 - ours)
        return used


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- statistics and machine ------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (like numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"samples": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
            "min_ms": min(ms, default=float("nan")), "max_ms": max(ms, default=float("nan"))}


def machine_info() -> dict[str, object]:
    info: dict[str, object] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    with contextlib.suppress(Exception):
        info["outlast_git"] = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True,
            timeout=5).stdout.strip()
    from importlib import metadata

    for package in ("celery", "kombu", "redis", "httpx", "uvicorn", "sqlalchemy", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[f"{package}_version"] = metadata.version(package)
    import sqlite3

    info["sqlite_version"] = sqlite3.sqlite_version
    return info
