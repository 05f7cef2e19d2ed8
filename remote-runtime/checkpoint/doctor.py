"""`outlast doctor`'s checkpoint section: can this host checkpoint task processes, and if not, why."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..worker.pidns import set_child_subreaper, spawn_in_pid_namespace
from . import criu

CHECKS = ("os", "criu binary", "privileges", "criu check", "dump + restore")
_TICKER = "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.02)\n"


def report() -> list[tuple[str, bool, str]]:
    """One (check name, ok, detail) row per entry of CHECKS. A check that needs an earlier one that
    failed is not run and says so (privileges are checked on any Linux host)."""
    rows: list[tuple[str, bool, str]] = []

    def run(name: str, check: Callable[[], tuple[str | None, str]]) -> None:
        failed = [n for n, ok, _ in rows if not ok]
        if failed and not (name == "privileges" and rows[0][1]):
            rows.append((name, False, f"not run: {failed[0]} failed"))
            return
        problem, detail = check()
        rows.append((name, problem is None, problem or detail))

    binary = criu.find_criu()
    run("os", lambda: (criu.platform_problem(), f"Linux {platform.release()} ({platform.machine()})"))
    run("criu binary", lambda: _binary(binary))
    run("privileges", lambda: (criu.privilege_problem(), f"euid {os.geteuid()} with CAP_SYS_ADMIN"))
    run("criu check", lambda: (criu.criu_check_problem(binary), "Looks good.") if binary else ("", ""))
    run("dump + restore", _dump_and_restore)
    return rows


def _binary(binary: Path | None) -> tuple[str | None, str]:
    if binary is None:
        return criu.missing_binary_reason(), ""
    version, problem = criu.binary_version(binary)
    return problem, f"{binary} (criu {version})"


def _dump_and_restore() -> tuple[str | None, str]:
    """Spawn a ticking interpreter in a PID namespace, dump it, restore it, see it tick on."""
    previous = set_child_subreaper(True)
    pid = restored = None
    try:
        with tempfile.TemporaryDirectory(prefix="outlast-doctor-") as tmp:
            work = Path(tmp)
            log = work / "task.log"
            pid = spawn_in_pid_namespace([sys.executable, "-c", _TICKER], dict(os.environ), work, log)
            if not _wait(lambda: _last(log) >= 3):
                return "the test process did not start ticking", ""
            result = criu.dump(pid, work / "images")
            pid = None
            frozen = _last(log)
            began = time.perf_counter()
            restored = criu.restore(work / "images", pidfile=work / "restored.pid")
            restore_seconds = time.perf_counter() - began
            if not _wait(lambda: _last(log) >= frozen + 3):
                return "the restored process did not go on ticking", ""
            return None, (f"dump {result.seconds * 1000:.0f} ms, restore {restore_seconds * 1000:.0f} ms, "
                          f"image {result.image_bytes / 1e6:.1f} MB")
    except (criu.CheckpointError, OSError) as exc:
        return str(exc), ""
    finally:
        for leftover in (pid, restored):
            if leftover is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(leftover, 0)
        set_child_subreaper(previous)


def _last(log: Path) -> int:
    try:
        lines = log.read_text().split()
    except OSError:
        return 0
    return int(lines[-1]) if lines and lines[-1].isdigit() else 0


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
