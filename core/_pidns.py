"""Forking a process into a PID namespace of its own (Linux), for the runtime and the fork server.

A process cannot put itself into a new PID namespace, only its future children, and can do so
only once; so a short-lived middle child calls unshare(CLONE_NEWPID) and forks the new
namespace's init (PID 1 inside), then exits. The init is re-parented to the closest ancestor
that is a child subreaper, which can then wait for it. Python 3.11 has no os.unshare: libc's.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from collections.abc import Callable

CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


@functools.cache
def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def fork_init(become: Callable[[int], None], *, new_namespace: bool = True, also: int = 0) -> int:
    """Fork a grandchild that runs `become(report_fd)` and never returns; return its PID as seen here.

    With `new_namespace` the grandchild is PID 1 of a new PID namespace. `report_fd` is a
    close-on-exec pipe: whatever the grandchild writes to it (prefixed "E") before it execs or
    closes it is raised here as an OSError, after the grandchild has been waited for. `also` are more
    CLONE_NEW* flags unshared with the PID namespace (CLONE_NEWNET: a network of its own).
    """
    unshare = libc().unshare  # resolved before forking
    r, w = os.pipe()  # close-on-exec: EOF once the middle child exited and the grandchild let go of it
    try:
        middle = os.fork()
        if middle == 0:  # never returns
            try:
                os.close(r)
                if new_namespace and unshare(CLONE_NEWPID | also) != 0:
                    raise OSError(ctypes.get_errno(), f"unshare(CLONE_NEWPID | {also:#x}) failed")
                init = os.fork()
                if init == 0:
                    try:
                        become(w)
                    except BaseException as exc:
                        os.write(w, f"E{exc}".encode())
                    finally:
                        os._exit(127)
                os.write(w, f"P{init}\n".encode())
            except BaseException as exc:
                os.write(w, f"E{exc}".encode())
            finally:
                os._exit(0)
        os.close(w)
        w = -1
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
        os.waitpid(middle, 0)
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    message = b"".join(chunks).decode(errors="replace")
    found = re.search(r"P(\d+)\n", message)  # the grandchild's error may come before or after this
    error = message.replace(found[0], "") if found else message
    if found and not error:
        return int(found[1])
    if found:
        os.waitpid(int(found[1]), 0)
    raise OSError(error.removeprefix("E") or "the process was not forked")
