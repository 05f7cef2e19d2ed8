"""Taking a task process's privileges away for good (Linux), under isolation: every capability but
one (bounding and ambient sets too, so that no later exec of a set-uid or file-capability binary gets
any back), optionally root itself (a uid and gid of its own), no_new_privs, and a seccomp filter.

The one kept is CAP_SYS_ADMIN, for CRIU alone: a task is PID 1 of a PID namespace of its own but
shares its fork server's mount namespace (a warm fork cannot leave it: the project's mappings and
descriptors belong to its mounts), so /proc is not its PID namespace's, and CRIU's parasite, which
runs inside the task with the task's credentials, mounts a procfs of its own there to dump it
("can't dump unprivileged task whose /proc doesn't belong to it" without the capability). What that
capability would otherwise allow a task (mounts, namespaces, swap, modules, keys, BPF...) the
seccomp filter denies (_seccomp.py); CRIU suspends the filter while it dumps.

Done in the task process after it was forked (or, started from scratch, just before it execs), never
in the fork server: that one needs its capabilities to give each task a PID namespace. Python has no
capset(2): libc's.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

from . import _seccomp
from ._pidns import libc

PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
CAP_SYS_ADMIN = 21
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def confine(uid: int = 0, gid: int | None = None, *, checkpointable: bool = True) -> None:
    """Drop every capability of this process (but CAP_SYS_ADMIN if `checkpointable`), become
    `uid`/`gid` (0: stay root), set no_new_privs and install the seccomp filter. OSError if a step is
    refused (the process must then not go on). A task that is not `checkpointable` keeps running
    where a checkpoint would have been: CRIU cannot dump it."""
    lib = libc()
    kept = 1 << CAP_SYS_ADMIN if checkpointable else 0
    for cap in range(_last_cap() + 1):  # needs CAP_SETPCAP: before the capabilities go
        if not kept >> cap & 1:
            _check(lib.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {cap})")
    _check(lib.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    if uid:
        group = uid if gid is None else gid
        _check(lib.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")  # for the one kept, if any
        os.setgroups([])
        os.setresgid(group, group, group)
        os.setresuid(uid, uid, uid)
        _check(lib.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS, 0)")
    header = _Header(_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()  # the low 32 bits, then the high ones; inheritable stays empty
    data[0].effective = data[0].permitted = kept
    _check(lib.capset(ctypes.byref(header), data), f"capset({kept:#x})")
    no_new_privs()
    _seccomp.install()


def no_new_privs() -> None:
    """No exec of this process or its children gains privileges (setuid, file capabilities) again."""
    _check(libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as last:
            return int(last.read())
    except (OSError, ValueError):
        return 40  # CAP_CHECKPOINT_RESTORE, the highest in Linux 6.x; dropping an unknown one fails below


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what} failed: {os.strerror(errno)}")


def loopback_up() -> None:
    """Bring `lo` up in a network namespace just made (it starts down): a task without outbound network
    keeps 127.0.0.1 for itself. Needs CAP_NET_ADMIN, so before confine()."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
