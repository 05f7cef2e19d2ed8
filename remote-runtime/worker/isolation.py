"""Isolation of a version's fork server, and so of every task process forked from it: its own mount,
IPC and UTS namespaces, set up here before the fork server's interpreter starts.

Run as `python -m outlast.runtime.worker.isolation <plan json> <argv...>`: it unshares, rebuilds
the mounts (the runtime's data directory and stores hidden under empty tmpfs, the root and the
version's code read-only, a private /tmp and /dev/shm, the control socket and the process
directory kept where they were), sets no_new_privs and execs `argv` (the fork server). Everything
the fork server opens afterwards belongs to the new namespace's mounts, which CRIU needs: a task
forked into a namespace of its own would keep files of its parent's mounts and not dump. Done
with libc's unshare(2)/mount(2) through ctypes (Python 3.11 has no os.unshare): no helper
binary, no OCI bundle per version, a warm fork stays a fork. The network namespace is shared, so
tasks keep outbound network.

OUTLAST_ISOLATION picks the mode: `namespaces` (this) or `process` (off: task processes see the
host's filesystem, as before).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from outlast._confine import confine, loopback_up, no_new_privs
from outlast._pidns import CLONE_NEWNET, libc

MODES = ("namespaces", "process")
DEFAULT_MODE = "process"  # see the README's Machines section for why this is not on by default yet
WORKDIR_ROOT_ENV = "OUTLAST_TASK_WORKDIR_ROOT"  # the fork server makes each task's working directory in it
WORKDIR_ROOT = "/tmp/outlast-tasks"
TASK_UID_ENV = "OUTLAST_TASK_UID"  # the setting's name, and how the fork server learns it
FORKSERVER_MEMORY_ENV = "OUTLAST_FORKSERVER_MEMORY_MB"  # see forkserver_memory()
NETWORK_ENV = "OUTLAST_TASK_NETWORK"  # `host` (default: outbound network) or `loopback` (none)
NETWORKS = ("host", "loopback")
CAPABILITIES_ENV = "OUTLAST_TASK_CAPABILITIES"  # `checkpoint` (default: CAP_SYS_ADMIN for CRIU) or `none`
CAPABILITY_CHOICES = ("checkpoint", "none")
NOBODY = 65534
# Supervisors' control sockets, under isolation: one host directory that every namespace binds, so a
# task restored into its image's namespace finds a supervisor started since (a restart, another node).
SOCKETS_DIR = "/tmp/outlast-sockets"

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
# A bind remount sets a mount's flags to exactly those given: each one it had must be given again.
KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": 8, "noatime": 1024, "nodiratime": 2048,
              "relatime": 1 << 21, "strictatime": 1 << 24}
# runc's default maskedPaths and readonlyPaths: what a process without capabilities but with uid 0 could
# still read (the kernel's memory, keys, timers of other processes) or write (sysctls, sysrq).
MASKED = ("/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware")
READ_ONLY_PROC = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# Mounts left writable: the private /tmp and /dev/shm, /proc (CRIU writes through a task's), ptys.
WRITABLE_MOUNTS = ("/tmp", "/dev/shm", "/proc", "/dev/pts")


class IsolationError(Exception):
    """The host does not allow the namespaces or mounts isolation needs."""


def mode_from(value: str | None) -> str:
    """The isolation mode a setting names; ValueError naming the valid ones."""
    mode = (value or DEFAULT_MODE).strip().lower()
    if mode not in MODES:
        raise ValueError(f"OUTLAST_ISOLATION must be one of {', '.join(MODES)}, not {value!r}")
    return mode


@dataclass
class Plan:
    """What a version's fork server sees. Paths are absolute; ones that do not exist are skipped."""

    hidden: list[str] = field(default_factory=list)  # each under an empty tmpfs
    read_only: list[str] = field(default_factory=list)  # the version's code and interpreter
    writable: list[str] = field(default_factory=list)  # kept visible and writable (socket, process dir)
    shared: list[str] = field(default_factory=list)  # host directories tasks may write (OUTLAST_ISOLATION_SHARE)
    hostname: str = "outlast-task"
    uid: int = 0  # task processes' uid (0: root without capabilities), see task_uid()
    network: bool = True  # False: each task process in a network namespace of its own, loopback only
    checkpointable: bool = True  # False: no capability at all, and CRIU cannot dump the tasks (see _confine)

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` started inside the plan's namespaces."""
        return [sys.executable, "-m", __name__, json.dumps(asdict(self)), *argv]


def plan_for(*, data_dir: Path, stores: Sequence[str | None], code: Sequence[Path],
             writable: Sequence[Path], shared: str | None = None) -> Plan:
    """The plan for one version: `stores` are the checkpoint and bundle store settings (local paths
    or file:// URLs are hidden too; s3:// ones are not on this filesystem); `shared` is
    OUTLAST_ISOLATION_SHARE, host directories separated by ':' that tasks may read and write. The
    task uid and network come from OUTLAST_TASK_UID and OUTLAST_TASK_NETWORK (ValueError if wrong)."""
    hidden = [data_dir]
    for store in stores:
        if store and "://" not in store:
            hidden.append(Path(store))
        elif store and store.startswith("file://"):
            hidden.append(Path(store.removeprefix("file://")))
    return Plan(hidden=[str(p.resolve()) for p in hidden], read_only=[str(p.resolve()) for p in code],
                writable=[str(p.resolve()) for p in writable],
                shared=[str(Path(p).resolve()) for p in (shared or "").split(":") if p],
                uid=task_uid(os.environ.get(TASK_UID_ENV))[0], network=network_from(os.environ.get(NETWORK_ENV)),
                checkpointable=checkpointable_from(os.environ.get(CAPABILITIES_ENV)))


def task_uid(value: str | None) -> tuple[int, str]:
    """Task processes' uid for OUTLAST_TASK_UID (`auto`, the default, or a number), and why.

    `auto` is nobody (65534) where CRIU can checkpoint a process of another uid, else 0 without
    capabilities: criu reads a task's rlimits with prlimit(2), which on another uid needs
    CAP_SYS_RESOURCE, and some hosts' root lacks it (this project's test VMs: the dump fails with
    "Can't get rlimit 0: Operation not permitted")."""
    text = (value or "auto").strip().lower()
    if text != "auto":
        if not text.isdigit() or int(text) >= 2**32 - 1:
            raise ValueError(f"OUTLAST_TASK_UID must be auto or a uid (a whole number), not {value!r}")
        return int(text), "set by OUTLAST_TASK_UID"
    if _has_capability(CAP_SYS_RESOURCE):
        return NOBODY, "auto: nobody"
    return 0, ("auto: root, because this process lacks CAP_SYS_RESOURCE, which CRIU "
               "needs to checkpoint a process of another uid")


def check_settings(isolation: str | None) -> None:
    """Read every isolation setting once (the mode, and OUTLAST_TASK_UID, OUTLAST_TASK_CAPABILITIES,
    OUTLAST_TASK_NETWORK), so that a wrong one stops a runtime or worker as it starts rather than
    when its first task process does; ValueError naming the setting and its choices."""
    mode_from(isolation)
    task_uid(os.environ.get(TASK_UID_ENV))
    checkpointable_from(os.environ.get(CAPABILITIES_ENV))
    network_from(os.environ.get(NETWORK_ENV))
    forkserver_memory(os.environ.get(FORKSERVER_MEMORY_ENV))


def forkserver_memory(value: str | None) -> int:
    """An isolated fork server's memory limit in bytes (OUTLAST_FORKSERVER_MEMORY_MB, default 2048);
    ValueError naming the setting."""
    text = (value or "2048").strip()
    if not text.isdigit() or int(text) < 64:
        raise ValueError(f"{FORKSERVER_MEMORY_ENV} must be a whole number of MiB, at least 64, not {value!r}")
    return int(text) * 2**20


def network_from(value: str | None) -> bool:
    """Whether task processes keep the host's network (OUTLAST_TASK_NETWORK); ValueError naming the choices."""
    text = (value or "host").strip().lower()
    if text not in NETWORKS:
        raise ValueError(f"OUTLAST_TASK_NETWORK must be one of {', '.join(NETWORKS)}, not {value!r}")
    return text == "host"


def checkpointable_from(value: str | None) -> bool:
    """OUTLAST_TASK_CAPABILITIES: `checkpoint` (CAP_SYS_ADMIN kept, seccomp-limited, so CRIU can dump the
    task) or `none`; ValueError naming the choices."""
    text = (value or "checkpoint").strip().lower()
    if text not in CAPABILITY_CHOICES:
        raise ValueError(f"OUTLAST_TASK_CAPABILITIES must be one of {', '.join(CAPABILITY_CHOICES)}, not {value!r}")
    return text == "checkpoint"


CAP_SYS_RESOURCE = 24


def _has_capability(cap: int) -> bool:
    with open("/proc/self/status") as status:
        effective = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
    return bool(effective >> cap & 1)


def sockets_dir(mode: str | None) -> str | None:
    """Where a supervisor makes its control socket's directory (None: anywhere, tempfile's choice)."""
    if mode_from(mode) == "process":
        return None
    os.makedirs(SOCKETS_DIR, mode=0o711, exist_ok=True)
    return SOCKETS_DIR


def task_workdir(forkserver_pid: int, process_id: str) -> Path:
    """A task's working directory (the fork server makes it) as seen from the host."""
    return Path(f"/proc/{forkserver_pid}/root{WORKDIR_ROOT}/{process_id}")


def enter(plan: Plan) -> None:
    """Unshare and rebuild the mounts for `plan`, in this process (before it execs the fork server).
    Order matters: shared directories first, the hidden ones over them (hidden wins), then what the
    runtime needs kept (code, socket, process directory) over those, and the root read-only last
    (a bind mount copies its source's read-only flag)."""
    lib = libc()
    _check(lib.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS), "unshare(mount, IPC, UTS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
    _detach_namespace_files()
    shared = _open_dirs(plan.shared)  # reachable once their parents are hidden
    kept = _open_dirs(plan.writable + plan.read_only)
    while libc().umount2(b"/dev/shm", MNT_DETACH) == 0:  # the host's, stacked maybe: off, not just covered,
        pass  # else CRIU would put their contents (PostgreSQL's shared memory...) in every image
    for path in ("/tmp", "/dev/shm"):
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _bind(shared)
    hidden = []
    for path in sorted(plan.hidden, key=len):
        if os.path.isdir(path):  # gone already if under one hidden before, or under the new /tmp
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
            hidden.append(path)
    _bind(kept)
    os.makedirs(WORKDIR_ROOT, mode=0o711, exist_ok=True)
    # The host's files: read, never written; the hidden ones' empty stand-ins too (not a scratch space).
    for path in ["/", *hidden, *(p for p in plan.read_only if p in kept)]:
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    _mask_proc()
    _read_only_elsewhere([*plan.writable, *plan.shared])
    host = plan.hostname.encode()
    _check(lib.sethostname(host, len(host)), "sethostname")
    _check(lib.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.chdir(WORKDIR_ROOT)  # the fork server's own cwd: writable (CRIU mounts its /proc in a task's cwd)


def _mask_proc() -> None:
    """/dev/null over the masked files, an empty read-only tmpfs over the masked directories, and the
    read-only paths bound onto themselves read-only (a task has uid 0 by default, capabilities or not)."""
    for path in MASKED:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=0")
        elif os.path.exists(path):
            _mount("/dev/null", path, None, MS_BIND)
    for path in READ_ONLY_PROC:
        if os.path.exists(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | 8)


def _read_only_elsewhere(writable: Sequence[str]) -> None:
    """Every other mount read-only too (/sys and its cgroup hierarchies: a task's own limits are root's
    files, /dev, /run...): a read-only root does not make the mounts below it read-only."""
    keep = (*WRITABLE_MOUNTS, *writable)
    for target, options in _mounts():
        if "rw" not in options or any(target == k or target.startswith(k.rstrip("/") + "/") for k in keep):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | sum(KEPT_FLAGS.get(o, 0) for o in options)
        _mount(None, target, None, flags)


def _mounts() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) of this namespace, parents before children."""
    with open("/proc/self/mountinfo") as mounts:
        fields = [line.split() for line in mounts]
    decoded = [(f[4].encode().decode("unicode_escape"), set(f[5].split(","))) for f in fields]
    return sorted(decoded, key=lambda mount: len(mount[0]))


def _open_dirs(paths: Sequence[str]) -> dict[str, int]:
    return {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in paths if os.path.isdir(path)}


def _bind(opened: dict[str, int]) -> None:
    """Each directory back at its path, from a descriptor opened before anything was hidden."""
    for path, fd in sorted(opened.items(), key=lambda item: len(item[0])):
        os.makedirs(path, exist_ok=True)  # inside a tmpfs if it was hidden (else it exists)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)


def doctor_row() -> tuple[str, bool, str]:
    """`outlast doctor`'s row: the configured mode, and whether a child can make the namespaces here."""
    try:
        mode = mode_from(os.environ.get("OUTLAST_ISOLATION"))
    except ValueError as exc:
        return ("isolation", False, str(exc))
    child = os.fork()
    if child == 0:  # never returns
        failed = libc().unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) != 0
        os._exit(min(255, ctypes.get_errno() or 1) if failed else 0)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    usable = "mount, IPC and UTS namespaces available" if code == 0 else \
        f"unshare(mount, IPC, UTS) fails here: {os.strerror(code)}"
    if mode == "process":
        return ("isolation", True, f"process (OUTLAST_ISOLATION): task processes see this host's files; {usable}")
    return ("isolation", code == 0, f"namespaces: each version's fork server in its own; {usable}")


def _detach_namespace_files() -> None:
    """Other namespaces' handles (`ip netns` mounts) are not the tasks' business, and CRIU cannot dump them."""
    with open("/proc/self/mountinfo") as mounts:
        targets = [line.split()[4] for line in mounts if " - nsfs " in line]
    for target in sorted(targets, key=len, reverse=True):
        libc().umount2(target.encode(), MNT_DETACH)  # one under another detached already: no matter


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = libc().mount(_c(source), _c(target), _c(fstype), ctypes.c_ulong(flags), _c(data))
    _check(result, f"mount {source or ''} on {target} (flags {flags:#x})")


def _c(value: str | None) -> bytes | None:
    return value.encode() if value is not None else None


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise IsolationError(f"{what} failed: {os.strerror(errno)}")


def open_to_task_group(plan: Plan) -> None:
    """A task with a uid of its own reaches the supervisor's control socket and reads its process
    directory through its group (its gid is its uid): each writable directory and what it directly
    holds get that group, with read and search (directories) or read-write (sockets) for it."""
    if not plan.uid:
        return
    for top in map(Path, plan.writable):
        for path in [top, *(top.iterdir() if top.is_dir() else ())]:
            if path.is_dir() and not path.is_symlink():
                _group_may(path, plan.uid, 0o050)
                for socket in path.glob("*.sock"):
                    _group_may(socket, plan.uid, 0o060)


def _group_may(path: Path, gid: int, bits: int) -> None:
    os.chown(path, -1, gid)
    os.chmod(path, path.stat().st_mode & 0o7777 | bits)


def main(args: Sequence[str]) -> None:
    plan = Plan(**json.loads(args[0]))
    try:
        open_to_task_group(plan)
        enter(plan)
    except (IsolationError, OSError) as exc:
        print(f"isolation: {exc}", file=sys.stderr)
        os._exit(70)
    if "outlast._zygote" in args[1:]:  # a fork server makes its tasks' working directories there
        try:  # it keeps its capabilities (it makes its tasks' namespaces) but can never gain more
            no_new_privs()
        except OSError as exc:
            print(f"isolation: {exc}", file=sys.stderr)
            os._exit(70)
        os.environ[WORKDIR_ROOT_ENV] = WORKDIR_ROOT
        os.environ[TASK_UID_ENV] = str(plan.uid)  # each task drops to it after its fork (the server cannot)
        os.environ[NETWORK_ENV] = "loopback" if not plan.network else "host"
        os.environ[CAPABILITIES_ENV] = "checkpoint" if plan.checkpointable else "none"
    else:  # a task process started from scratch: confined before it runs anything
        try:
            if not plan.network:
                _check(libc().unshare(CLONE_NEWNET), "unshare(network)")
                loopback_up()
            confine(plan.uid, checkpointable=plan.checkpointable)
        except OSError as exc:
            print(f"isolation: {exc}", file=sys.stderr)
            os._exit(70)
    os.execv(args[1], list(args[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
