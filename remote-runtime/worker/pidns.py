"""Process primitives for task processes that can be checkpointed (Linux): a child subreaper, and
spawning a program as PID 1 of its own PID namespace.

A task runs as PID 1 of its own PID namespace, so a restore never collides with a PID taken
meanwhile; its host PID changes on every restore, its inner PID stays 1. It is a session leader
(`setsid`) and has no parent-death signal. Its stdio is /dev/null plus a log file opened
O_WRONLY|O_APPEND: CRIU skips the size check for append-only files, so the log may grow between
dump and restore (a pipe would come back readerless).
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Mapping, Sequence

from outlast._pidns import fork_init, libc

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def set_child_subreaper(enabled: bool = True) -> bool:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans below this process are re-parented to it (and so can
    be waited for) instead of to init. Returns the previous setting."""
    previous = ctypes.c_int(0)
    libc().prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0)
    if libc().prctl(_PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")
    return bool(previous.value)


def spawn_in_pid_namespace(argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str],
                           stdout_path: str | os.PathLike[str], cgroup_procs: Sequence[str] = ()) -> int:
    """Start `argv` as PID 1 of a new PID namespace; return its host PID once it has exec'd.

    This process is made a child subreaper, so the init is re-parented to it: wait for it with
    os.waitpid. The init calls setsid, has stdin on /dev/null and stdout/stderr on `stdout_path`
    opened O_WRONLY|O_APPEND, no other fds, default signal mask.
    Note: as PID 1 it ignores signals it has no handler for (SIGTERM included); SIGKILL works.
    It joins the cgroups whose `cgroup.procs` files are given before it execs.
    """
    if not argv:
        raise ValueError("argv is empty")
    set_child_subreaper(True)
    args, environ, workdir = list(argv), dict(env), os.fspath(cwd)
    max_fd = os.sysconf("SC_OPEN_MAX")
    out_fd = os.open(stdout_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fork_init(lambda w: _exec_init(args, environ, workdir, null_fd, out_fd, w, max_fd,
                                              tuple(cgroup_procs)))
    except OSError as exc:
        raise OSError(f"could not start {args[0]!r} in a new PID namespace: {exc}") from None
    finally:
        os.close(out_fd)
        os.close(null_fd)


def _exec_init(argv: list[str], env: dict[str, str], cwd: str, null_fd: int, out_fd: int, w: int,
               max_fd: int, cgroup_procs: tuple[str, ...] = ()) -> None:
    """In the namespace init, after fork: set up, exec; on failure report through `w` and exit."""
    try:
        for procs in cgroup_procs:  # "0": the writing process itself
            with open(procs, "w") as joining:
                joining.write("0")
        os.setsid()
        os.dup2(null_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.closerange(3, w)
        os.closerange(w + 1, max_fd)
        os.chdir(cwd)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; exec keeps SIG_IGN
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:
        os.write(w, f"E{exc}".encode())
    finally:
        os._exit(127)
