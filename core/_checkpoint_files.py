"""A task process's open files and datagram sockets across a checkpoint, whatever others do meanwhile.

CRIU reopens each regular file by path at restore and refuses if its size changed since the dump,
except for files opened write-only in append mode (it cannot tell a log from a truncated image).
A file the project opened at import, an sqlite3 database say, is shared with the other task
processes, which keep writing to it while this one is frozen. So just before the dump each such
descriptor is swapped for /dev/null, and after the restore the file is reopened by path, as CRIU
would, with the same flags and offset, on the same descriptor. Unlinked files are left to CRIU,
which saves their contents. A POSIX lock held on a swapped file is lost (closing any descriptor
of a file drops them): do not hold a database transaction open across a wait.

A UDP socket is likewise shared with the fork server, which keeps its port: CRIU's restore would
fail to bind it again. It is swapped too and made anew after the restore: connected to the same
peer, bound to the same address, or to another port of it if that one is taken (said on stderr,
which is the run's timeline). TCP connections are left to CRIU, which brings them back closed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Any

_SIZE_CHECK_EXEMPT = os.O_WRONLY | os.O_APPEND


_COPIED_OPTIONS = (socket.SO_REUSEADDR, socket.SO_BROADCAST)


@dataclass(frozen=True)
class SetAside:
    fd: int
    flags: int
    inheritable: bool
    path: str = ""  # a file: reopened at `offset`
    offset: int = 0
    datagram: tuple[int, int, int] | None = None  # a UDP socket: family, type, protocol
    address: Any = None  # where it was bound and connected
    peer: Any = None
    options: tuple[int, ...] = ()


def set_aside() -> list[SetAside]:
    """Swap every linked regular file CRIU would size-check for /dev/null; returns what to reopen."""
    aside: list[SetAside] = []
    if not os.path.isdir("/proc/self/fd"):  # no CRIU without Linux: nothing will be dumped
        return aside
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            with contextlib.suppress(OSError):  # closed meanwhile, or the listing's own descriptor
                entry = _describe(fd)
                if entry is not None:
                    os.dup2(null, fd, inheritable=entry.inheritable)
                    aside.append(entry)
    finally:
        os.close(null)
    return aside


def _describe(fd: int) -> SetAside | None:
    info = os.fstat(fd)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if stat.S_ISSOCK(info.st_mode):
        return _describe_socket(fd, flags)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink == 0 or flags & _SIZE_CHECK_EXEMPT == _SIZE_CHECK_EXEMPT:
        return None
    return SetAside(fd, flags, os.get_inheritable(fd), path=os.readlink(f"/proc/self/fd/{fd}"),
                    offset=os.lseek(fd, 0, os.SEEK_CUR))


def _describe_socket(fd: int, flags: int) -> SetAside | None:
    sock = socket.socket(fileno=fd)
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_DGRAM:
            return None
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        return SetAside(fd, flags, os.get_inheritable(fd), datagram=(sock.family, sock.type, sock.proto),
                        address=sock.getsockname(), peer=peer,
                        options=tuple(sock.getsockopt(socket.SOL_SOCKET, o) for o in _COPIED_OPTIONS))
    finally:
        sock.detach()  # the descriptor stays the project's


def reopen(aside: list[SetAside]) -> None:
    """After the restore: each file and socket back on its descriptor; one that cannot be is reported
    on stderr (the run's timeline) and its descriptor stays /dev/null."""
    for entry in aside:
        try:
            fd = _reopen_socket(entry) if entry.datagram else _reopen_file(entry)
        except OSError as exc:
            what = entry.path or f"the UDP socket on {entry.address}"
            print(f"outlast: {what} (descriptor {entry.fd}) could not be reopened after the restore: {exc}",
                  file=sys.stderr)
            continue
        os.dup2(fd, entry.fd, inheritable=entry.inheritable)
        os.close(fd)


def _reopen_file(entry: SetAside) -> int:
    fd = os.open(entry.path, entry.flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC))
    os.lseek(fd, entry.offset, os.SEEK_SET)
    return fd


def _reopen_socket(entry: SetAside) -> int:
    assert entry.datagram is not None
    sock = socket.socket(*entry.datagram)
    for option, value in zip(_COPIED_OPTIONS, entry.options, strict=True):
        sock.setsockopt(socket.SOL_SOCKET, option, value)
    host, port = entry.address[:2]
    if port:
        try:
            sock.bind(entry.address)
        except OSError as exc:  # the fork server (or a sibling) still holds the port
            sock.bind((host, 0, *entry.address[2:]))
            print(f"outlast: the UDP socket on descriptor {entry.fd} was on port {port}, which is taken "
                  f"({exc.strerror}); after the restore it is on port {sock.getsockname()[1]}", file=sys.stderr)
    if entry.peer is not None:
        sock.connect(entry.peer)
    fcntl.fcntl(sock.fileno(), fcntl.F_SETFL, entry.flags)
    return sock.detach()
