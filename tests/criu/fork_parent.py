"""A small fork server for checkpoint tests and bench/dedup.py, shaped like `outlast._zygote`.

Imports some modules and builds some state once, then for each line on stdin (a log path) forks a
child as PID 1 of a new PID namespace that keeps a little state of its own and ticks into the log
(printing a digest of that state at start and on SIGUSR1). Replies one line per child on stdout:
its host PID. The children are re-parented to the caller, which must be a child subreaper.
`fork_children` is the caller's side.
"""

import asyncio  # noqa: F401 - imported for the memory it brings, like a project's imports
import ctypes
import decimal
import email.message  # noqa: F401
import hashlib
import http.client  # noqa: F401
import json
import os
import signal
import sqlite3  # noqa: F401
import subprocess
import sys
import time
import xml.etree.ElementTree  # noqa: F401
from pathlib import Path

import httpx  # noqa: F401
import pydantic  # noqa: F401

CLONE_NEWPID = 0x20000000
SHARED = {f"key-{i}": [decimal.Decimal(i) / 7, str(i) * 3] for i in range(20_000)}  # the parent's heap


def child(log: str) -> None:
    os.setsid()
    # A directory of its own, like a runtime task process while it is dumped: criu's parasite mounts
    # /proc at `proc.crtools` in the cwd, so children sharing one could not be dumped at once.
    own_dir = Path(log).with_suffix(".cwd")
    own_dir.mkdir(exist_ok=True)
    os.chdir(own_dir)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.closerange(3, 1024)
    own = [os.urandom(64) for _ in range(2_000)]  # this run's state: pages no other run has
    asked = []
    signal.signal(signal.SIGUSR1, lambda *_: asked.append(1))  # as a namespace's init it needs a handler
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    print(f"digest {hashlib.sha256(b''.join(own)).hexdigest()}", flush=True)
    n = 0
    while True:
        n += 1
        print(f"tick {n}", flush=True, end="\n" if own and SHARED else "")
        if asked:
            asked.clear()
            print(f"digest {hashlib.sha256(b''.join(own)).hexdigest()}", flush=True)
        time.sleep(0.02)


def main() -> None:
    unshare = ctypes.CDLL(None, use_errno=True).unshare
    for line in sys.stdin:
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.close(r)
            if unshare(CLONE_NEWPID) != 0:
                os._exit(1)
            task = os.fork()
            if task == 0:
                os.close(w)
                child(json.loads(line))
            os.write(w, f"{task}\n".encode())
            os._exit(0)
        os.close(w)
        answer = os.read(r, 64)
        os.close(r)
        os.waitpid(middle, 0)
        sys.stdout.write(answer.decode() or "error\n")
        sys.stdout.flush()


def fork_children(count: int, workdir: Path) -> tuple[subprocess.Popen, list[tuple[int, Path]]]:
    """Start the fork server and fork `count` children; returns it and each child's (host PID, log).
    The caller must be a child subreaper, and kill and reap the children and the server."""
    server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    assert server.stdin and server.stdout
    children = []
    for i in range(count):
        log = workdir / f"child-{i}.log"
        server.stdin.write(json.dumps(str(log)) + "\n")
        server.stdin.flush()
        answer = server.stdout.readline().strip()
        if not answer.isdigit():
            raise OSError(f"the fork server could not fork child {i}: {answer!r}")
        children.append((int(answer), log))
    return server, children


if __name__ == "__main__":
    main()
