"""Checkpoint/restore of waiting task processes with CRIU (Linux only).

`criu` holds the primitives (find/check the binary, dump, restore; spawning a process as PID 1
of its own PID namespace is `worker.pidns`); `doctor` says whether they work on this host and why not; `store` keeps
image directories between a dump and a restore (local directory or S3, on the shared object layer
`outlast.runtime.objects`), each packed by `archive`, memory pages deduplicated in the local
store's `pagepool` of `pagepacks` (indexed on disk: `pageindex`; sorted by `pagebuild`; a kept
version's pages matched by address: `basepages`, `pagemaps`; uncompressed copies for restores:
`pagecache`) or in the bucket (`s3pages`).
"""

from .criu import (
    CheckpointError,
    CriuStatus,
    DumpResult,
    check,
    dump,
    find_criu,
    restore,
)
from .store import (
    CheckpointMissing,
    CheckpointStore,
    CheckpointStoreError,
    LocalCheckpointStore,
    S3CheckpointStore,
    StoredCheckpoint,
    open_store,
)

__all__ = [
    "CheckpointError",
    "CheckpointMissing",
    "CheckpointStore",
    "CheckpointStoreError",
    "CriuStatus",
    "DumpResult",
    "LocalCheckpointStore",
    "S3CheckpointStore",
    "StoredCheckpoint",
    "check",
    "dump",
    "find_criu",
    "open_store",
    "restore",
]
