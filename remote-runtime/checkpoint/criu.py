"""A thin, typed wrapper around the `criu` command line: find and check it, dump, restore.

Facts this relies on (measured on Debian 12 / kernel 6.18 with Debian's criu 4.2.1, see
`scripts/install-criu.sh`):

* A task runs as PID 1 of its own PID namespace (`worker.pidns.spawn_in_pid_namespace`), so a
  restore never collides with a PID taken meanwhile; its host PID changes on every restore, its
  inner PID stays 1. It is a session leader (`setsid`), so no `--shell-job` is needed.
* Its stdio is /dev/null plus a log file opened O_WRONLY|O_APPEND: criu skips the size check for
  append-only files, so the log may grow between dump and restore. Pipes would come back readerless.
* TCP connections are dumped and restored closed (`--tcp-close`); clients reconnect. A live Unix
  socket to the supervisor cannot be dumped at all: the task closes it before a dump.
* `--manage-cgroups=ignore` on restore: the task lands in the cgroups of the `criu restore`
  process instead of recreating the dumping host's cgroup paths.
* Without CAP_SYS_RESOURCE criu logs "Can't setup RLIMIT_NOFILE for self" as an Error on every
  run and carries on with exit status 0; that line is left out of error reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..worker.pidns import set_child_subreaper

MIN_VERSION = (4, 2)
DEFAULT_ROOT_PREFIX = Path("/opt/outlast-criu")
INSTALL_HINT = "run scripts/install-criu.sh"
MANIFEST = "outlast-images.json"

_CAP_SYS_ADMIN = 21
_CAP_CHECKPOINT_RESTORE = 40
_HARMLESS = re.compile(r"RLIMIT_NOFILE")


class CheckpointError(RuntimeError):
    """A dump or restore failed; the message carries criu's own error lines."""

    def __init__(self, message: str, *, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


@dataclass(frozen=True)
class CriuStatus:
    available: bool
    version: str | None = None
    binary: Path | None = None
    reason: str = ""  # why not available; empty when it is


@dataclass(frozen=True)
class DumpResult:
    images_dir: Path
    seconds: float  # wall time of `criu dump`
    image_bytes: int  # total size of the *.img files
    log_path: Path


# ---------------------------------------------------------------------------------------------
# finding and checking criu


def install_prefixes() -> list[Path]:
    """Where scripts/install-criu.sh puts criu: $OUTLAST_CRIU_PREFIX, else its two defaults."""
    if prefix := os.environ.get("OUTLAST_CRIU_PREFIX"):
        return [Path(prefix)]
    prefixes = [DEFAULT_ROOT_PREFIX]
    with contextlib.suppress(RuntimeError):  # no home directory
        prefixes.append(Path.home() / ".local/share/outlast/criu")
    return prefixes


def find_criu() -> Path | None:
    """$OUTLAST_CRIU if set (and nothing else then), else the install prefix, else `criu` on PATH."""
    if explicit := os.environ.get("OUTLAST_CRIU"):
        path = Path(explicit)
        return path if _is_executable(path) else None
    for prefix in install_prefixes():
        if _is_executable(prefix / "bin" / "criu"):
            return prefix / "bin" / "criu"
    found = shutil.which("criu")
    return Path(found) if found else None


def check() -> CriuStatus:
    """Whether this process can checkpoint and restore; `reason` says exactly why not."""
    if problem := platform_problem():
        return CriuStatus(False, reason=problem)
    binary = find_criu()
    if binary is None:
        return CriuStatus(False, reason=missing_binary_reason())
    version, problem = binary_version(binary)
    if problem:
        return CriuStatus(False, version, binary, problem)
    if problem := privilege_problem():
        return CriuStatus(False, version, binary, problem)
    if problem := criu_check_problem(binary):
        return CriuStatus(False, version, binary, problem)
    return CriuStatus(True, version, binary)


def platform_problem() -> str | None:
    if sys.platform != "linux":
        return f"not Linux (platform {sys.platform}): CRIU exists only for Linux"
    return None


def missing_binary_reason() -> str:
    if explicit := os.environ.get("OUTLAST_CRIU"):
        return f"OUTLAST_CRIU={explicit} is not an executable file"
    looked = ", ".join(str(p / "bin" / "criu") for p in install_prefixes())
    return f"criu binary not found (looked at {looked} and PATH); {INSTALL_HINT}"


def binary_version(binary: Path) -> tuple[str | None, str | None]:
    """(version, problem): problem is set when it does not run or is older than MIN_VERSION."""
    try:
        proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{binary} does not run: {exc}"
    match = re.search(r"Version:\s*(\d+)\.(\d+)(\S*)", proc.stdout)
    if proc.returncode != 0 or not match:
        return None, f"{binary} --version failed (exit {proc.returncode}): {_tail(proc.stdout + proc.stderr)}"
    version = f"{match[1]}.{match[2]}{match[3]}"
    if (int(match[1]), int(match[2])) < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        return version, (f"{binary} is criu {version}; need >= {need} (older ones fail on current kernels "
                         f"or cannot dump inet sockets); {INSTALL_HINT}")
    return version, None


def privilege_problem() -> str | None:
    """criu (in its normal, privileged mode) and unshare(CLONE_NEWPID) need CAP_SYS_ADMIN."""
    euid = os.geteuid()
    caps = _effective_caps()
    if caps is not None and caps >> _CAP_SYS_ADMIN & 1:
        return None
    if euid != 0:
        extra = (" (CAP_CHECKPOINT_RESTORE alone is not enough: criu --unprivileged is not used and "
                 "creating PID namespaces needs CAP_SYS_ADMIN)") if caps and caps >> _CAP_CHECKPOINT_RESTORE & 1 else ""
        return f"not root (euid {euid}) and no CAP_SYS_ADMIN{extra}; run the runtime as root"
    return (f"root, but CAP_SYS_ADMIN is missing from the effective capabilities (CapEff={caps or 0:#x}); "
            "a container needs --cap-add SYS_ADMIN (or --privileged)")


def criu_check_problem(binary: Path) -> str | None:
    try:
        proc = subprocess.run([str(binary), "check"], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`criu check` did not run: {exc}"
    if proc.returncode == 0:
        return None
    return f"`criu check` failed (exit {proc.returncode}): {_tail(proc.stdout + proc.stderr)}"


# ---------------------------------------------------------------------------------------------
# dump and restore


def dump(pid: int, images_dir: str | os.PathLike[str], *, leave_running: bool = False, tcp_close: bool = True,
         timeout: float = 120.0) -> DumpResult:
    """`criu dump` the process tree rooted at host `pid` into `images_dir` (created if needed, and
    holding no images yet).

    Unless `leave_running`, criu kills the tree once it is dumped; if it is our child it is reaped
    here, so its PID is free when this returns. TCP connections are closed unless `tcp_close` is
    false (then criu refuses to dump established ones). File locks are dumped if the tree holds any.
    Raises CheckpointError with criu's errors.
    """
    images = Path(images_dir).absolute()
    images.mkdir(parents=True, exist_ok=True)
    if any(images.glob("*.img")):
        raise CheckpointError(f"{images} already holds images; dump into an empty directory")
    # --network-lock skip: a task with a network namespace of its own (OUTLAST_TASK_NETWORK=loopback) has
    # only `lo`, and criu's default lock needs iptables binaries hosts may lack; TCP is closed anyway.
    args = ["dump", "-t", str(pid), "-D", str(images), "-o", "dump.log", "-v1", "--network-lock", "skip"]
    if leave_running:
        args.append("--leave-running")
    if tcp_close:
        args.append("--tcp-close")
    if _holds_file_locks(pid):
        args.append("--file-locks")
    seconds = _run("dump", args, images / "dump.log", timeout)
    if not leave_running:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    _write_manifest(images)
    size = sum(p.stat().st_size for p in images.glob("*.img"))
    return DumpResult(images, seconds, size, images / "dump.log")


def restore(images_dir: str | os.PathLike[str], *, pidfile: str | os.PathLike[str], timeout: float = 60.0,
            cgroup_roots: dict[str, str] | None = None) -> int:
    """`criu restore -d` from `images_dir`; returns the restored root's host PID (also in `pidfile`).

    The caller is made a child subreaper first, so the restored process becomes its child once
    criu exits and can be waited for. TCP sockets come back closed; cgroups are not recreated
    (the tree joins the caller's), unless `cgroup_roots` (hierarchy's controller list, "" on v2 ->
    path) names existing cgroups to restore it into: `--manage-cgroups=soft` then leaves their limits
    as they are and charges the restored memory there. Raises CheckpointError with criu's errors.
    """
    images = Path(images_dir).absolute()
    if not images.is_dir():
        raise CheckpointError(f"image directory {images} does not exist")
    if not (images / "inventory.img").is_file():
        raise CheckpointError(f"{images} is not a CRIU image directory (no inventory.img)")
    _verify_manifest(images)
    pid_path = Path(pidfile).absolute()
    pid_path.unlink(missing_ok=True)
    set_child_subreaper(True)
    # --root /: a task dumped in a mount namespace of its own (worker/isolation.py) has its mounts
    # rebuilt from the image; criu 4.2.1 needs a root to build them under (else BUG at mount.c:48).
    args = ["restore", "-D", str(images), "-d", "--pidfile", str(pid_path), "-o", "restore.log", "-v1",
            "--tcp-close", "--root", "/", "--network-lock", "skip"]
    if cgroup_roots:
        args.append("--manage-cgroups=soft")
        args += [f"--cgroup-root={names}:{path}" if names else f"--cgroup-root={path}"
                 for names, path in cgroup_roots.items()]
    else:
        args.append("--manage-cgroups=ignore")
    if any(images.glob("filelocks*.img")):  # without the flag criu drops the locks silently
        args.append("--file-locks")
    _run("restore", args, images / "restore.log", timeout)
    try:
        return int(pid_path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"criu restore succeeded but its pidfile {pid_path} is unreadable: {exc}",
                              log_path=images / "restore.log") from exc


def _run(action: str, args: list[str], log_path: Path, timeout: float) -> float:
    binary = find_criu()
    if binary is None:
        raise CheckpointError(missing_binary_reason())
    start = time.perf_counter()
    try:
        proc = subprocess.Popen([str(binary), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise CheckpointError(f"criu {action} did not run: {exc}", log_path=log_path) from exc
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        # criu 4.2.1 can hang for good (e.g. restoring a truncated pages image: the half-restored
        # task spins at 100% CPU and criu waits on it). Kill what criu started (killing a PID
        # namespace's init takes the namespace along), then criu, then reap what came to us.
        victims = _tree(proc.pid) - {proc.pid}
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        proc.kill()
        proc.communicate()
        for victim in victims:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(victim, 0)
        raise CheckpointError(f"criu {action} timed out after {timeout:.0f} s and was killed: "
                              f"{_tail(_read(log_path)) or '(no log)'} [log: {log_path}]", log_path=log_path) from exc
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        detail = _tail(_read(log_path) + output) or "(no output)"
        raise CheckpointError(f"criu {action} failed (exit {proc.returncode}): {detail} [log: {log_path}]",
                              log_path=log_path)
    return seconds


def settle_orphaned_dump(images_dir: str | os.PathLike[str], process_dir: Path, timeout: float = 120.0) -> None:
    """Wait for a `criu dump` into `images_dir` that a dead supervisor started (criu outlives it), and
    SIGKILL the process it was dumping if that survived (a failed dump leaves it running, cut off in
    its wait): the caller is about to delete the half-written images, and the run starts afresh.
    Only a process whose cwd is under `process_dir` (where a task process sits while it is dumped)
    is killed: its PID may have been taken by another since."""
    images = str(Path(images_dir).absolute()).encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dump" not in args or images not in args or b"-t" not in args:
            continue
        target = args[args.index(b"-t") + 1]
        deadline = time.monotonic() + timeout
        while _running(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
        try:
            cwd = Path(os.readlink(f"/proc/{int(target)}/cwd"))
        except (OSError, ValueError):
            continue  # gone (dumped and ended, as it should be)
        if cwd.is_relative_to(Path(process_dir).absolute()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(target), signal.SIGKILL)


def _running(proc: Path) -> bool:
    """Whether /proc/<pid> is a live process (not gone, not a zombie nobody reaped yet)."""
    try:
        return proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _write_manifest(images: Path) -> None:
    """Record every image file's size next to the images: restore() refuses a dir that does not
    match (criu 4.2.1 hangs instead of failing on a truncated pages image)."""
    files = {p.name: p.stat().st_size for p in sorted(images.glob("*.img"))}
    tmp = images / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1))
    tmp.replace(images / MANIFEST)


def _verify_manifest(images: Path) -> None:
    path = images / MANIFEST
    if not path.exists():
        return  # not written by dump() (e.g. by runc); criu's own checks apply
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is unreadable: {exc}") from exc
    for name, size in files.items():
        try:
            actual = (images / name).stat().st_size
        except FileNotFoundError:
            raise CheckpointError(f"image file {name} is missing from {images}") from None
        if actual != size:
            raise CheckpointError(f"image file {name} in {images} has {actual} bytes, the dump wrote {size}: "
                                  "the image is truncated or corrupt")


def _holds_file_locks(pid: int) -> bool:
    """Whether any process of the tree rooted at `pid` holds a POSIX/flock lock (criu refuses those
    unless given --file-locks, which then restores them)."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    holders = {int(f[4]) for f in (line.split() for line in lines) if len(f) > 4 and f[4].isdigit()}
    return bool(holders & _tree(pid))


def _tree(pid: int) -> set[int]:
    pids, todo = set(), [pid]
    while todo:
        current = todo.pop()
        pids.add(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(c) for c in task.read_text().split()]
    return pids


# ---------------------------------------------------------------------------------------------


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _effective_caps() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 12) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip() and not _HARMLESS.search(line)]
    return " | ".join(kept[-lines:])
