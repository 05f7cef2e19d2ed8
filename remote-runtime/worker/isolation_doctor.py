"""`outlast doctor`'s isolation section: what this host gives task processes (cgroups per controller,
whether task cgroups can be made here, user namespaces, runc, seccomp) and what the settings make of
it (task uid, capabilities, network)."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

from outlast import _seccomp
from outlast._pidns import libc

from . import cgroups, isolation
from .limits import NEEDED, Limits

CLONE_NEWUSER = 0x10000000


def report() -> list[tuple[str, bool, str]]:
    """(check name, ok, detail) rows; a failed row means machine limits are not enforced here."""
    rows: list[tuple[str, bool, str]] = []
    try:
        found, missing = cgroups.detect()
    except OSError as exc:
        return [("cgroups", False, f"cannot read /proc/self/mountinfo or /proc/self/cgroup: {exc}")]
    for controller in cgroups.CONTROLLERS:
        if controller in found:
            hierarchy = found[controller]
            rows.append((f"cgroup {controller}", True, f"v{hierarchy.version} at {hierarchy.mount}, "
                                                       f"this process in {hierarchy.own}"))
        else:
            rows.append((f"cgroup {controller}", controller not in NEEDED, missing[controller]))
    limits = Limits()
    try:
        rows.append(("task cgroups", limits.enforced, limits.describe()))
    finally:
        limits.close()
    rows.append(("user namespaces", True, user_namespaces()))
    rows.append(("runc", True, runc()))
    rows.append(isolation.doctor_row())
    rows.extend(confinement())
    return rows


def confinement() -> list[tuple[str, bool, str]]:
    """What a task process under OUTLAST_ISOLATION=namespaces runs as, from the settings and this host."""
    rows: list[tuple[str, bool, str]] = []
    seccomp = _seccomp.available()
    rows.append(("seccomp", seccomp, "libseccomp found: task processes get a filter (mounts, namespaces, "
                 "modules, keys, BPF, ptrace denied)" if seccomp else
                 "libseccomp.so.2 NOT found (apt-get install libseccomp2): isolated task processes cannot start"))
    try:
        uid, why = isolation.task_uid(os.environ.get(isolation.TASK_UID_ENV))
        rows.append(("task uid", True, f"{uid} ({why})"))
    except ValueError as exc:
        rows.append(("task uid", False, str(exc)))
    try:
        kept = isolation.checkpointable_from(os.environ.get(isolation.CAPABILITIES_ENV))
        rows.append(("task capabilities", True, "CAP_SYS_ADMIN only, for CRIU's parasite (seccomp-limited); "
                     "OUTLAST_TASK_CAPABILITIES=none drops it too, and such tasks are never checkpointed"
                     if kept else "none (OUTLAST_TASK_CAPABILITIES=none): waiting tasks are not checkpointed"))
    except ValueError as exc:
        rows.append(("task capabilities", False, str(exc)))
    try:
        network = isolation.network_from(os.environ.get(isolation.NETWORK_ENV))
        rows.append(("task network", True, "the host's (outbound allowed; OUTLAST_TASK_NETWORK=loopback takes it "
                     "away)" if network else "loopback only: a network namespace per task process"))
    except ValueError as exc:
        rows.append(("task network", False, str(exc)))
    return rows


def user_namespaces() -> str:
    """Whether a child can unshare(CLONE_NEWUSER) here (informational: task processes do not use one yet)."""
    limit = Path("/proc/sys/user/max_user_namespaces")
    maximum = limit.read_text().strip() if limit.exists() else "?"
    unshare = libc().unshare
    child = os.fork()
    if child == 0:  # never returns
        os._exit(0 if unshare(CLONE_NEWUSER) == 0 else min(255, ctypes.get_errno() or 1))
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return (f"available (max_user_namespaces {maximum}); not used by task processes (one per forked task "
                "does not dump with CRIU; docs/isolation.md)")
    return f"NOT available: unshare(CLONE_NEWUSER) failed with {os.strerror(code)} (max_user_namespaces {maximum})"


def runc() -> str:
    """runc's version, if installed (informational: containers do not use it yet)."""
    binary = shutil.which("runc")
    if binary is None:
        return "not installed (apt-get install runc); not used: docs/isolation.md says why"
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary} does not run: {exc}"
    first = out.splitlines()[0] if out else "version unknown"
    return f"{binary} ({first}); not used (a runc call per run costs tens of ms; docs/isolation.md)"
