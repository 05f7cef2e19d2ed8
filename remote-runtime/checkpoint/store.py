"""Where checkpoint images live between a dump and a restore: a local directory or S3.

Each checkpoint is one object of the shared object layer (`outlast.runtime.objects`): a tar +
zstd -1 archive with a listing that proves it complete (see `archive`), named `<key>.tar.zst` so
that keys like "run_abc" and "run_abc/1" never clash. Both stores also deduplicate memory pages
across checkpoints: the local one in a page pool (`pagepool`), S3 in content-addressed page packs
in the bucket (`s3pages`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..objects import LocalObjects, ObjectKind, ObjectStore, S3Location, S3Objects, parse_store_url
from .archive import CheckpointMissing, CheckpointStoreError, pack, unpack
from .basepages import base_pieces
from .pagemaps import pages_file_runs
from .pagepool import PagePool, poolable
from .s3pages import S3Pages

__all__ = [
    "CHECKPOINTS",
    "CheckpointMissing",
    "CheckpointStore",
    "CheckpointStoreError",
    "LocalCheckpointStore",
    "S3CheckpointStore",
    "StoredCheckpoint",
    "open_store",
]

CHECKPOINTS = ObjectKind("checkpoint", ".tar.zst", CheckpointStoreError, CheckpointMissing)


@dataclass(frozen=True)
class StoredCheckpoint:
    key: str
    raw_bytes: int  # size of the files in the image directory
    stored_bytes: int  # bytes this put added: the compressed object, plus the new pages a local store pooled
    seconds: float  # packing plus writing/uploading
    parts: dict[str, float] = field(default_factory=dict)  # seconds of each step, where the store tells them


class CheckpointStore(Protocol):
    def put(self, key: str, images_dir: Path, *, base: str | None = None) -> StoredCheckpoint:
        """Pack `images_dir` into one object under `key`, replacing any object stored there. `base`
        names the code version the process ran, whose pages a store may keep for its next runs."""
        ...

    def get(self, key: str, dest_dir: Path) -> None:
        """Unpack the object under `key` into `dest_dir` (new or empty). Raises CheckpointMissing
        if there is none, CheckpointStoreError if it is corrupt or truncated."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object under `key`; nothing happens if there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def describe(self) -> str:
        """Where the objects go, for logs and error messages."""
        ...


class _ArchiveStore:
    """A checkpoint store over any object store: each image packed whole into its object."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    def put(self, key: str, images_dir: Path, *, base: str | None = None) -> StoredCheckpoint:
        start = time.perf_counter()
        with self.objects.writing(key) as out:
            raw = pack(Path(images_dir), out)
            stored = out.tell()
        return StoredCheckpoint(key, raw, stored, time.perf_counter() - start)

    def get(self, key: str, dest_dir: Path) -> None:
        with self.objects.reading(key) as source:
            unpack(source, Path(dest_dir), self._what(key))

    def delete(self, key: str) -> None:
        self.objects.delete(key)

    def exists(self, key: str) -> bool:
        return self.objects.exists(key)

    def describe(self) -> str:
        return self.objects.describe()

    def _what(self, key: str) -> str:
        return f"checkpoint {key!r} ({self.objects.where(key)})"


class LocalCheckpointStore(_ArchiveStore):
    """One file per key under `root`, written whole or not at all (see `objects.LocalObjects`).

    With `dedup` (default: on unless OUTLAST_CHECKPOINT_DEDUP=0), the pages files of CRIU images go
    to a page pool under `root/.pages` shared by all keys, each distinct 4 KiB page stored once:
    the waiting runs of one code version, forked from one fork server, share most of their pages."""

    objects: LocalObjects

    def __init__(self, root: Path, *, dedup: bool | None = None) -> None:
        super().__init__(LocalObjects(CHECKPOINTS, root))
        self.root = self.objects.root
        self.dedup = dedup if dedup is not None else os.environ.get("OUTLAST_CHECKPOINT_DEDUP", "1") != "0"
        # ".pages" cannot clash with a key (keys have no hidden names).
        self.pool = PagePool.shared(self.root / ".pages", self._has_object)

    def path(self, key: str) -> Path:
        return self.objects.path(key)

    def put(self, key: str, images_dir: Path, *, base: str | None = None) -> StoredCheckpoint:
        CHECKPOINTS.validate(key)  # before the pool records anything under it
        images_dir = Path(images_dir)
        pages = poolable(images_dir) if self.dedup else []
        if not pages and not self.pool.exists():
            return super().put(key, images_dir)
        clock = _Clock()
        # Under the pool's lock: a concurrent delete must not drop a pack this put builds on.
        with self.pool.writing() as pool:
            addresses = pages_file_runs(images_dir)
            kept = self.pool.base_map(base) if base else {}
            clock.lap("lock")
            pooled = {p.relative_to(images_dir).as_posix(): pool.add_file(p, addresses.get(p.name), kept.get(p.name))
                      for p in pages}
            clock.lap("hash_pages")
            pool.commit_pack()
            clock.lap("write_new_pages")
            packs = {run[0] for _, _, runs in pooled.values() for run in runs}
            # Referenced before the object lands: a crash in between leaks a reference, never a pack.
            added = pool.reference(key, packs)
            clock.lap("reference")
            try:
                with self.objects.writing(key) as out:
                    raw = pack(images_dir, out, pooled)
                    stored = out.tell()
            except BaseException:
                pool.release(key, only=added)
                raise
            clock.lap("write_archive")
            pool.release(key, keep=packs)  # what the replaced object used and this one does not
            if base:
                pool.keep_base(base, packs, {name: base_pieces(addresses[name], pooled[name][2])
                                             for name in addresses if name in pooled})
            clock.lap("release")
        return StoredCheckpoint(key, raw, stored + pool.new_bytes, clock.total(), clock.parts)

    def get(self, key: str, dest_dir: Path) -> None:
        with self.objects.reading(key) as source:
            if not self.pool.exists():
                unpack(source, Path(dest_dir), self._what(key))
                return
            with self.pool.reading() as pool:
                unpack(source, Path(dest_dir), self._what(key), pool.fill)

    def delete(self, key: str) -> None:
        CHECKPOINTS.validate(key)
        if not self.pool.exists():
            super().delete(key)
            return
        with self.pool.writing() as pool:
            self.objects.delete(key)
            pool.release(key)

    def _has_object(self, key: str) -> bool:
        """For the pool's crash recovery, which reads keys back from its own records."""
        try:
            return self.objects.exists(key)
        except ValueError:
            return False


class S3CheckpointStore(_ArchiveStore):
    """One archive per key under `s3://bucket/prefix` (see `objects.S3Objects`). With `dedup` (default:
    on unless OUTLAST_CHECKPOINT_DEDUP=0) the pages files of CRIU images are shared between keys as
    content-addressed page packs in the bucket (see `s3pages`); this node keeps the packs it uses in
    a folder per bucket and prefix under `cache_root` (default: the system's temp directory)."""

    objects: S3Objects

    def __init__(self, bucket: str, prefix: str = "checkpoints/", *, client: Any = None,
                 endpoint_url: str | None = None, region: str | None = None, cache_root: Path | None = None,
                 dedup: bool | None = None) -> None:
        super().__init__(S3Objects(CHECKPOINTS, bucket, prefix, client=client, endpoint_url=endpoint_url,
                                   region=region))
        self.bucket, self.prefix, self.client = self.objects.bucket, self.objects.prefix, self.objects.client
        self.dedup = dedup if dedup is not None else os.environ.get("OUTLAST_CHECKPOINT_DEDUP", "1") != "0"
        if cache_root is None:
            cache_root = Path(tempfile.gettempdir()) / f"outlast-checkpoint-pages-{os.getuid()}"
        where = hashlib.sha256(f"{endpoint_url}|{bucket}|{self.prefix}".encode()).hexdigest()[:16]
        self.pages = S3Pages(self.objects, cache_root / where)

    def put(self, key: str, images_dir: Path, *, base: str | None = None) -> StoredCheckpoint:
        CHECKPOINTS.validate(key)
        images_dir = Path(images_dir)
        if not (self.dedup and poolable(images_dir)):
            stored = super().put(key, images_dir)
            self.pages.delete(key)  # the pages a pooled image replaced here used
            return stored
        clock = _Clock()
        raw, added = self.pages.put(key, images_dir, base, clock.lap)
        return StoredCheckpoint(key, raw, added, clock.total(), clock.parts)

    def get(self, key: str, dest_dir: Path) -> None:
        with self.objects.reading(key) as source:
            self.pages.get(key, source, Path(dest_dir), self._what(key))

    def delete(self, key: str) -> None:
        """The archive first: from then on nothing needs the key's pages, whatever happens next."""
        CHECKPOINTS.validate(key)
        self.objects.delete(key)
        self.pages.delete(key)

    def sweep(self) -> dict[str, int]:
        """Clear what crashed puts and deletes left in the bucket (see `s3pages.S3Pages.sweep`)."""
        return self.pages.sweep()

    def object_key(self, key: str) -> str:
        return self.objects.object_key(key)


class _Clock:
    """Seconds spent in each step of a put, for the run's checkpoint detail and the benchmark."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.parts: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.parts[step] = self.parts.get(step, 0.0) + now - self.last
        self.last = now

    def total(self) -> float:
        return self.last - self.start


def open_store(url: str | None, data_dir: Path) -> CheckpointStore:
    """The store OUTLAST_CHECKPOINT_STORE names (see `objects.parse_store_url`); unset → `<data_dir>/checkpoints`.
    An s3://bucket URL without a path keeps the images at the bucket's root."""
    where = parse_store_url(url, "OUTLAST_CHECKPOINT_STORE", Path(data_dir) / "checkpoints")
    if isinstance(where, S3Location):
        return S3CheckpointStore(where.bucket, where.prefix, endpoint_url=where.endpoint_url,
                                 cache_root=Path(data_dir) / "checkpoint-pages")
    return LocalCheckpointStore(where)
