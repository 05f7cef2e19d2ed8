"""Checkpoint/restore of waiting task processes with CRIU (Linux only).

`criu` holds the primitives (find/check the binary, dump, restore, spawn a process as PID 1 of
its own PID namespace); `doctor` says whether they work on this host and why not.
"""

from .criu import (
    CheckpointError,
    CriuStatus,
    DumpResult,
    check,
    dump,
    find_criu,
    restore,
    spawn_in_pid_namespace,
)

__all__ = [
    "CheckpointError",
    "CriuStatus",
    "DumpResult",
    "check",
    "dump",
    "find_criu",
    "restore",
    "spawn_in_pid_namespace",
]
