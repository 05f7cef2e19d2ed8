"""cgroups as this host mounts them: which version holds each controller, and one task's cgroup.

A host may mount cgroup v1 hierarchies, a v2 hierarchy, or both ("hybrid": this project's test
machines have memory, cpu, cpuacct and pids on v1 and only hugetlb on v2). Each controller is
looked up on its own in /proc/self/mountinfo, never assumed. Task cgroups go under a parent this
runtime owns: `<the runtime's own cgroup>/outlast/<supervisor pid>` in every hierarchy used, so
they stay inside whatever accounting the runtime itself is in, and a supervisor that died can be
told apart from a live one (its leftovers are removed by the next one).

On v2 the controllers must be enabled in `cgroup.subtree_control` all the way down; the kernel
refuses that in a cgroup that holds processes, so a v2 host needs the runtime started in a
delegated cgroup with no process of its own at the top (systemd's `Delegate=yes` gives that).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")  # cpuacct: v1 only; on v2, cpu.stat has the usage
# devices: v1 only (v2 filters devices with an eBPF program attached to the cgroup, not done here).
# What a task may open once its cgroup denies the rest: runc's default devices (null, zero, full,
# random, urandom, tty, ptmx and the ptys).
ALLOWED_DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm",
                   "c 136:* rwm")
PARENT = "outlast"
CPU_PERIOD_US = 100_000


class CgroupError(Exception):
    """A cgroup could not be created, limited, joined or read."""


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller lives: cgroup `version` 1 or 2, mounted at `mount`, this process at `own`."""

    controller: str
    version: int
    mount: Path
    own: str  # this process's cgroup path within the hierarchy ("/" for the root)
    name: str  # the hierarchy's controller list as /proc/self/cgroup names it (criu's --cgroup-root key)

    def path(self, relative: str) -> Path:
        return self.mount / relative.lstrip("/")


@dataclass(frozen=True)
class Usage:
    """What a cgroup counted so far."""

    cpu_ns: int | None = None
    peak_bytes: int | None = None
    oom_kills: int = 0
    memory_limit: int | None = None


def detect(proc: Path = Path("/proc/self")) -> tuple[dict[str, Hierarchy], dict[str, str]]:
    """The hierarchy of each controller found, and for each one missing, why."""
    own_v1, own_v2 = _own_cgroups(proc / "cgroup")
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in (proc / "mountinfo").read_text().splitlines():
        fields = line.split()
        if " - " not in line:
            continue
        fstype, *_, options = line.split(" - ", 1)[1].split()
        if fstype == "cgroup":
            for option in options.split(","):
                v1.setdefault(option, Path(fields[4]))
        elif fstype == "cgroup2" and v2 is None:
            v2 = Path(fields[4])
    found: dict[str, Hierarchy] = {}
    missing: dict[str, str] = {}
    v2_controllers = _v2_controllers(v2, own_v2)
    for controller in CONTROLLERS:
        if controller in v1:
            names = next((n for n in own_v1 if controller in n.split(",")), controller)
            found[controller] = Hierarchy(controller, 1, v1[controller], own_v1.get(names, "/"), names)
        elif controller == "devices":
            missing[controller] = ("not mounted as cgroup v1 (on cgroup v2 a device filter is an eBPF program, "
                                   "which outlast does not attach: devices are not filtered)")
        elif v2 is not None and (controller if controller != "cpuacct" else "cpu") in v2_controllers:
            found[controller] = Hierarchy(controller, 2, v2, own_v2 or "/", "")
        else:
            missing[controller] = ("not mounted as cgroup v1, and not offered by cgroup v2"
                                   + (f" (its cgroup.controllers: {' '.join(sorted(v2_controllers)) or 'none'})"
                                      if v2 is not None else " (no cgroup2 mount)"))
    if "cpuacct" in missing and found.get("cpu") is not None and found["cpu"].version == 2:
        found["cpuacct"] = found["cpu"]  # v2's cpu.stat counts usage
        del missing["cpuacct"]
    return found, missing


def _own_cgroups(path: Path) -> tuple[dict[str, str], str | None]:
    v1: dict[str, str] = {}
    v2 = None
    for line in path.read_text().splitlines():
        _, names, cgroup = line.split(":", 2)
        if names == "":
            v2 = cgroup
        else:
            v1[names] = cgroup
    return v1, v2


def _v2_controllers(mount: Path | None, own: str | None) -> set[str]:
    if mount is None:
        return set()
    try:
        return set((mount / (own or "/").lstrip("/") / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


class TaskCgroup:
    """One task process's cgroup in every hierarchy used (v1: one directory per hierarchy; v2: one),
    at `suffix` below the runtime's own cgroup in each (they differ on this project's test hosts:
    memory:/some/path but cpu:/)."""

    def __init__(self, hierarchies: dict[str, Hierarchy], suffix: str) -> None:
        self.hierarchies = hierarchies
        self.relative = suffix
        self.paths = {c: f"{h.own.rstrip('/')}/{suffix}" for c, h in hierarchies.items()}  # within each hierarchy
        self.dirs = {c: h.path(self.paths[c]) for c, h in hierarchies.items()}
        # Counter files stay open: a read is one pread, not open/read/close. Each syscall hands the GIL
        # over, and on the event loop every hand-over may wait for a busy thread (~2 ms per attempt).
        self._files: dict[tuple[str, str, int], int] = {}

    def create(self) -> None:
        for directory in dict.fromkeys(self.dirs.values()):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CgroupError(f"cannot create cgroup {directory}: {exc.strerror}") from None
        for controller in ("memory", "cpu", "pids"):
            hierarchy = self.hierarchies.get(controller)
            if hierarchy is not None and hierarchy.version == 2:
                _enable_v2(hierarchy, self.paths[controller], controller)
        if "devices" in self.hierarchies:  # before any process is in it: deny all, then the harmless ones
            self._write("devices", "devices.deny", "a")
            for rule in ALLOWED_DEVICES:
                self._write("devices", "devices.allow", rule)

    def limit(self, cpus: float, memory_bytes: int, pids: int) -> None:
        """Set the limits; CgroupError if the kernel refuses one (memory below what the process uses)."""
        memory = self.hierarchies.get("memory")
        if memory is not None:
            directory = self.dirs["memory"]
            if memory.version == 1:
                _set_v1_memory(directory, memory_bytes)
            else:
                self._write("memory", "memory.max", str(memory_bytes))
                with contextlib.suppress(CgroupError):  # no swap accounting on this kernel: nothing to swap to
                    self._write("memory", "memory.swap.max", "0")
        cpu = self.hierarchies.get("cpu")
        if cpu is not None:
            quota = max(1000, int(cpus * CPU_PERIOD_US))
            if cpu.version == 1:
                self._write("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US))
                self._write("cpu", "cpu.cfs_quota_us", str(quota))
                self._write("cpu", "cpu.shares", str(max(2, int(cpus * 1024))))
            else:
                self._write("cpu", "cpu.max", f"{quota} {CPU_PERIOD_US}")
                self._write("cpu", "cpu.weight", str(max(1, min(10_000, int(cpus * 100)))))
        if "pids" in self.hierarchies:
            self._write("pids", "pids.max", str(pids))

    def place(self, pid: int) -> None:
        """Move `pid` (and, on v1, only that thread group) into this cgroup in every hierarchy."""
        for controller, directory in self.dirs.items():
            try:
                (directory / "cgroup.procs").write_text(str(pid))
            except ProcessLookupError:
                raise
            except OSError as exc:
                raise CgroupError(f"cannot move process {pid} into {directory} ({controller}): {exc.strerror}") \
                    from None

    def procs_files(self) -> tuple[str, ...]:
        """The cgroup.procs files a process writes "0" to, to join this cgroup itself."""
        return tuple(str(d / "cgroup.procs") for d in dict.fromkeys(self.dirs.values()))

    def reset_peak(self) -> None:
        """Start the memory high-water mark again (v1 only; v2's memory.peak counts from creation)."""
        memory = self.hierarchies.get("memory")
        if memory is not None and memory.version == 1:
            with contextlib.suppress(OSError):
                os.pwrite(self._file("memory", "memory.max_usage_in_bytes", os.O_WRONLY), b"0", 0)

    def usage(self) -> Usage:
        """CPU time, memory peak, OOM kills and the memory limit, as far as the controllers tell."""
        cpu_ns = peak = limit = None
        oom_kills = 0
        cpuacct = self.hierarchies.get("cpuacct")
        if cpuacct is not None:
            if cpuacct.version == 1:
                cpu_ns = _int(self._sample("cpuacct", "cpuacct.usage"))
            elif (usec := _keyed(self._sample("cpuacct", "cpu.stat")).get("usage_usec")) is not None:
                cpu_ns = usec * 1000
        memory = self.hierarchies.get("memory")
        if memory is not None:
            peak_file, limit_file, events_file = (("memory.max_usage_in_bytes", "memory.limit_in_bytes",
                                                   "memory.oom_control") if memory.version == 1 else
                                                  ("memory.peak", "memory.max", "memory.events"))
            peak = _int(self._sample("memory", peak_file))
            limit = _int(self._sample("memory", limit_file))
            oom_kills = _keyed(self._sample("memory", events_file)).get("oom_kill", 0)
        return Usage(cpu_ns, peak, oom_kills, limit)

    def cpu_quota(self) -> float | None:
        """The CPU quota in cores, as the kernel holds it (None: unlimited or no cpu controller)."""
        cpu = self.hierarchies.get("cpu")
        if cpu is None:
            return None
        if cpu.version == 1:
            quota = _read_int(self.dirs["cpu"] / "cpu.cfs_quota_us")
            period = _read_int(self.dirs["cpu"] / "cpu.cfs_period_us")
            return quota / period if quota and period and quota > 0 else None
        text = _read(self.dirs["cpu"] / "cpu.max").split()
        return int(text[0]) / int(text[1]) if len(text) == 2 and text[0] != "max" else None

    def criu_roots(self) -> dict[str, str]:
        """criu's --cgroup-root arguments (controller list -> path) that restore a tree into this cgroup."""
        return {(h.name if h.version == 1 else ""): self.paths[c] for c, h in self.hierarchies.items()}

    def remove(self, attempts: int = 20) -> bool:
        """Remove it once its processes are gone (a killed process leaves it a moment later)."""
        self.close_files()
        left = list(dict.fromkeys(self.dirs.values()))
        for _ in range(attempts):
            for directory in list(left):
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        left.remove(directory)  # not ours to fix; reported below
                    continue
                left.remove(directory)
            if not left:
                return True
            time.sleep(0.05)
        return False

    def close_files(self) -> None:
        """Close the counter files kept open (a removed cgroup's files answer ENODEV, yet each holds a descriptor)."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def _file(self, controller: str, name: str, mode: int = os.O_RDONLY) -> int:
        key = (controller, name, mode)
        if (fd := self._files.get(key)) is None:
            fd = self._files[key] = os.open(self.dirs[controller] / name, mode | os.O_CLOEXEC)
        return fd

    def _sample(self, controller: str, name: str) -> str:
        """A counter file's contents now ("" if it cannot be read: the cgroup is gone, or has no such file)."""
        try:
            return os.pread(self._file(controller, name), 4096, 0).decode()
        except OSError:
            return ""

    def _write(self, controller: str, name: str, value: str) -> None:
        path = self.dirs[controller] / name
        try:
            path.write_text(value)
        except OSError as exc:
            raise CgroupError(f"cannot write {value} to {path}: {exc.strerror}") from None


def _set_v1_memory(directory: Path, limit: int) -> None:
    """memory.limit_in_bytes and memsw (memory + swap) both at `limit`: no swap. memsw may never be
    below the memory limit, so the order depends on whether the limit goes up or down."""
    memsw = directory / "memory.memsw.limit_in_bytes"
    plain = directory / "memory.limit_in_bytes"
    order = [plain, memsw] if limit < (_read_int(plain) or 0) else [memsw, plain]
    for path in order:
        if path is memsw and not memsw.exists():  # swap accounting off: the host has no swap to use
            continue
        try:
            path.write_text(str(limit))
        except OSError as exc:
            raise CgroupError(f"cannot set {path.name} to {limit} in {directory}: {exc.strerror}"
                              + (" (the process already uses more)" if exc.errno == errno.EBUSY else "")) from None
    with contextlib.suppress(OSError):
        (directory / "memory.swappiness").write_text("0")


def _enable_v2(hierarchy: Hierarchy, relative: str, controller: str) -> None:
    """Enable `controller` in subtree_control from the runtime's own cgroup down to the task's parent."""
    parts = [p for p in relative.strip("/").split("/") if p]
    own = [p for p in hierarchy.own.strip("/").split("/") if p]
    for depth in range(len(own), len(parts)):
        control = hierarchy.mount.joinpath(*parts[:depth]) / "cgroup.subtree_control"
        if controller in _read(control).split():
            continue
        try:
            control.write_text(f"+{controller}")
        except OSError as exc:
            raise CgroupError(f"cannot enable the {controller} controller in {control}: {exc.strerror}"
                              + (" (a cgroup v2 cgroup that holds processes cannot hand controllers down: start "
                                 "the runtime in a delegated cgroup)" if exc.errno == errno.EBUSY else "")) from None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _read_int(path: Path) -> int | None:
    return _int(_read(path))


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _keyed(text: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
