"""A fork server for task processes: import the project once, then fork each new task process.

Started by a supervisor as `python -m outlast._zygote` with the environment every task process
shares. Starting a Python process and importing a project costs around a second of CPU; forking
one that already did costs milliseconds. Requests come one JSON line at a time on stdin:
`{"process_id", "env", "output", "namespace", "network"}` (network false: loopback only); each
reply is one line on the original stdout: `{"pid": <host pid>}` or `{"error": "..."}`. The first
line says whether the import worked.

Each task process is forked twice: the middle child (optionally after unshare(CLONE_NEWPID),
making the task PID 1 of a new PID namespace) forks the task and exits, so the task is
re-parented to the supervisor, a child subreaper, which waits for it. The fork server itself
stays single-threaded, as forking requires.

A task process keeps every descriptor the project opened while importing (a log file, an
sqlite3 connection, a socket): they are the project's, as in any prefork server. It loses only
the fork server's own: the request pipe (replaced by /dev/null), the reply channel, and whatever
was open before the import began (a supervisor on uvloop leaves copies of our stdio there).
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import signal
import sys
import tempfile
import traceback
from typing import Any

from . import _process, _seccomp
from ._confine import confine, loopback_up
from ._pidns import CLONE_NEWNET, fork_init

WORKDIR_ROOT = os.environ.pop("OUTLAST_TASK_WORKDIR_ROOT", "")  # set under isolation; not the tasks' business
TASK_UID = int(os.environ.pop("OUTLAST_TASK_UID", "0") or 0)  # under isolation: who the task runs as (0: root)
LOOPBACK_ONLY = os.environ.pop("OUTLAST_TASK_NETWORK", "host") == "loopback"  # a request may say otherwise
CHECKPOINTABLE = os.environ.pop("OUTLAST_TASK_CAPABILITIES", "checkpoint") == "checkpoint"


def main() -> None:
    replies = os.dup(1)
    own = _open_descriptors() - {0, 1, 2}  # before the import: none of them is the project's
    os.dup2(2, 1)  # what the project prints while importing must not mix with the replies
    try:
        _process.prepare()
    except BaseException as exc:
        _reply(replies, {"import_error": _process.describe_import_failure(exc)})
        return
    _flush_open_files()
    if WORKDIR_ROOT:  # isolated: each task only loads the filter built here once
        try:
            _seccomp.prepared()
        except OSError as exc:
            _reply(replies, {"import_error": f"cannot build the task processes' seccomp filter: {exc}"})
            return
    _reply(replies, {"ready": True})
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            reply: dict[str, Any] = {"pid": _fork_task(request, own)}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        _reply(replies, reply)


def _reply(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, json.dumps(message).encode() + b"\n")


def _open_descriptors() -> set[int]:
    listed = {int(fd) for fd in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if _is_open(fd)}  # not the one listdir used and closed


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _flush_open_files() -> None:
    """Write out what the project buffered in files while importing; else every task process
    would inherit the buffer and write it again."""
    for obj in gc.get_objects():
        if isinstance(obj, io.IOBase):
            with contextlib.suppress(Exception):  # closed, read-only, or a broken user subclass
                if not obj.closed and obj.writable():
                    obj.flush()


def _fork_task(request: dict[str, Any], own: set[int]) -> int:
    """Fork a task process; `own` are the fork server's descriptors, which the task closes."""
    sys.stdout.flush()
    sys.stderr.flush()

    def become(report_fd: int) -> None:
        os.close(report_fd)  # the task has started: nothing more to report
        for fd in own:
            os.close(fd)
        _become_task(request)

    offline = request.get("network", not LOOPBACK_ONLY) is False  # a network namespace of its own, loopback only
    return fork_init(become, new_namespace=bool(request.get("namespace")) or offline,
                     also=CLONE_NEWNET if offline else 0)


def _become_task(request: dict[str, Any]) -> None:
    """In the forked task: its own session, stdio, environment; then serve attempts. Never returns."""
    try:
        os.setsid()
        _replace_descriptor(0, os.open(os.devnull, os.O_RDONLY))  # was the request pipe
        if request.get("output"):
            # Append-only, so that a checkpoint of this process restores whatever the file's size then.
            out = os.open(request["output"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(out, 1)
            _replace_descriptor(2, out)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.environ.update(request.get("env", {}))
        if request.get("network", not LOOPBACK_ONLY) is False:
            loopback_up()
        _enter_workdir(request["process_id"])
        if WORKDIR_ROOT:  # isolated: no capabilities, no way back to them (see _confine)
            confine(TASK_UID, checkpointable=CHECKPOINTABLE)
        _process.serve()
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _enter_workdir(process_id: str) -> None:
    """Under isolation (the fork server runs in a mount namespace of its own, see the runtime's
    worker/isolation.py) each task works in a private, writable directory of its private /tmp: the
    project's code is read-only there, and CRIU needs a writable working directory to dump it."""
    if not WORKDIR_ROOT:
        return
    workdir = os.path.join(WORKDIR_ROOT, process_id)
    os.mkdir(workdir, 0o700)
    if TASK_UID:
        os.chown(workdir, TASK_UID, TASK_UID)  # the task's once it is no longer root
    os.chdir(workdir)
    os.environ["TMPDIR"] = workdir
    tempfile.tempdir = None  # gettempdir() looks again


def _replace_descriptor(target: int, fd: int) -> None:
    os.dup2(fd, target)
    os.close(fd)


if __name__ == "__main__":
    main()
