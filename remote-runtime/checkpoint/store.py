"""Where checkpoint images live between a dump and a restore: a local directory or S3.

Each checkpoint is one object (see `archive`: tar + zstd -1 + a listing that proves it complete),
named `<key>.tar.zst` so that keys like "run_abc" and "run_abc/1" never clash. The local store
also deduplicates memory pages across checkpoints (see `pagepool`); S3 stores each image whole.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from .archive import CheckpointMissing, CheckpointStoreError, pack, unpack
from .pagepool import PagePool, poolable

__all__ = [
    "CheckpointMissing",
    "CheckpointStore",
    "CheckpointStoreError",
    "LocalCheckpointStore",
    "S3CheckpointStore",
    "StoredCheckpoint",
    "open_store",
]

SUFFIX = ".tar.zst"
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"  # no "", ".", ".." or hidden names
_KEY = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
_MAX_KEY = 512
_SPOOL = 16 << 20  # S3 transfers stay in memory up to this size, then go through a temp file


@dataclass(frozen=True)
class StoredCheckpoint:
    key: str
    raw_bytes: int  # size of the files in the image directory
    stored_bytes: int  # bytes this put added: the compressed object, plus the new pages a local store pooled
    seconds: float  # packing plus writing/uploading


class CheckpointStore(Protocol):
    def put(self, key: str, images_dir: Path) -> StoredCheckpoint:
        """Pack `images_dir` into one object under `key`, replacing any object stored there."""
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


def validate_key(key: str) -> str:
    """Return `key` if it is a valid checkpoint key, else raise ValueError saying why."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or ".." in key.split("/") or len(key) > _MAX_KEY:
        raise ValueError(f"invalid checkpoint key {key!r}: use letters, digits and _-./ in '/'-separated "
                         f"parts that do not start with '.' or '-' (at most {_MAX_KEY} characters)")
    return key


class LocalCheckpointStore:
    """One file per key under `root`. Written to a temp file, fsynced and renamed, so a crash
    leaves either the old object or the new one under the real name, never half of one.

    With `dedup` (default: on unless OUTLAST_CHECKPOINT_DEDUP=0), the pages files of CRIU images go
    to a page pool under `root/.pages` shared by all keys, each distinct 4 KiB page stored once:
    the waiting runs of one code version, forked from one fork server, share most of their pages."""

    def __init__(self, root: Path, *, dedup: bool | None = None) -> None:
        self.root = Path(root).absolute()
        self.dedup = dedup if dedup is not None else os.environ.get("OUTLAST_CHECKPOINT_DEDUP", "1") != "0"
        # ".pages" cannot clash with a key (keys have no hidden names).
        self.pool = PagePool.shared(self.root / ".pages", functools.partial(_has_object, self.root))

    def path(self, key: str) -> Path:
        return self.root / (validate_key(key) + SUFFIX)

    def put(self, key: str, images_dir: Path) -> StoredCheckpoint:
        target = self.path(key)
        images_dir = Path(images_dir)
        start = time.perf_counter()
        pages = poolable(images_dir) if self.dedup else []
        if not pages and not self.pool.exists():
            raw, stored = self._write(target, images_dir)
            return StoredCheckpoint(key, raw, stored, time.perf_counter() - start)
        # Under the pool's lock: a concurrent delete must not drop a pack this put builds on.
        with self.pool.writing() as pool:
            pooled = {p.relative_to(images_dir).as_posix(): pool.add_file(p) for p in pages}
            pool.commit_pack()
            packs = {run[0] for _, _, runs in pooled.values() for run in runs}
            # Referenced before the object lands: a crash in between leaks a reference, never a pack.
            added = pool.reference(key, packs)
            try:
                raw, stored = self._write(target, images_dir, pooled)
            except BaseException:
                pool.release(key, only=added)
                raise
            pool.release(key, keep=packs)  # what the replaced object used and this one does not
        return StoredCheckpoint(key, raw, stored + pool.new_bytes, time.perf_counter() - start)

    def _write(self, target: Path, images_dir: Path, pooled: dict[str, Any] | None = None) -> tuple[int, int]:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                raw = pack(images_dir, out, pooled)
                out.flush()
                os.fsync(out.fileno())
                stored = out.tell()
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(target.parent)
        return raw, stored

    def get(self, key: str, dest_dir: Path) -> None:
        path = self.path(key)
        try:
            source = path.open("rb")
        except FileNotFoundError:
            raise CheckpointMissing(f"no checkpoint {key!r} in {self.describe()}") from None
        what = f"checkpoint {key!r} ({path})"
        with source:
            if not self.pool.exists():
                unpack(source, Path(dest_dir), what)
                return
            with self.pool.reading() as pool:
                unpack(source, Path(dest_dir), what, pool.fill)

    def delete(self, key: str) -> None:
        path = self.path(key)
        if self.pool.exists():
            with self.pool.writing() as pool:
                path.unlink(missing_ok=True)
                pool.release(key)
        else:
            path.unlink(missing_ok=True)
        # Drop the key's now-empty folders (one per run otherwise piles up); a concurrent put
        # into one of them recreates it.
        for parent in path.parents:
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def describe(self) -> str:
        return f"local directory {self.root}"


class S3CheckpointStore:
    """One object per key under `s3://bucket/prefix`, through boto3's managed transfers (multipart
    for large images). Credentials and region come the usual boto3 way unless a client is given."""

    def __init__(self, bucket: str, prefix: str = "checkpoints/", *, client: Any = None,
                 endpoint_url: str | None = None, region: str | None = None) -> None:
        if not bucket:
            raise ValueError("S3 checkpoint store: bucket is empty")
        prefix = prefix.lstrip("/")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        if client is None:
            try:
                import boto3
            except ImportError as exc:
                raise ImportError("the S3 checkpoint store needs boto3: pip install 'outlast[s3]'") from exc
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.client = client

    def object_key(self, key: str) -> str:
        return self.prefix + validate_key(key) + SUFFIX

    def put(self, key: str, images_dir: Path) -> StoredCheckpoint:
        name = self.object_key(key)
        start = time.perf_counter()
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
            raw = pack(Path(images_dir), spool)
            stored = spool.tell()
            spool.seek(0)
            with self._errors(key, "upload"):
                self.client.upload_fileobj(spool, self.bucket, name)
        return StoredCheckpoint(key, raw, stored, time.perf_counter() - start)

    def get(self, key: str, dest_dir: Path) -> None:
        name = self.object_key(key)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
            with self._errors(key, "download"):
                self.client.download_fileobj(self.bucket, name, spool)
            spool.seek(0)
            unpack(spool, Path(dest_dir), f"checkpoint {key!r} (s3://{self.bucket}/{name})")

    def delete(self, key: str) -> None:
        with self._errors(key, "delete"):
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))  # no error if absent

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key, "look up"):
                self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except CheckpointMissing:
            return False
        return True

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise CheckpointMissing(f"no checkpoint {key!r} in {self.describe()}") from None
            raise CheckpointStoreError(f"could not {action} checkpoint {key!r} in {self.describe()}: {exc}") from exc
        except BotoCoreError as exc:
            raise CheckpointStoreError(f"could not {action} checkpoint {key!r} in {self.describe()}: {exc}") from exc


def open_store(url: str | None, data_dir: Path) -> CheckpointStore:
    """The store OUTLAST_CHECKPOINT_STORE names: unset → `<data_dir>/checkpoints`; a path or
    file:///path → that directory; s3://bucket/prefix → S3 (endpoint from OUTLAST_S3_ENDPOINT_URL
    or AWS_ENDPOINT_URL)."""
    if not url:
        return LocalCheckpointStore(Path(data_dir) / "checkpoints")
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"OUTLAST_CHECKPOINT_STORE {url!r}: no bucket (use s3://bucket/prefix)")
        endpoint = os.environ.get("OUTLAST_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
        return S3CheckpointStore(parsed.netloc, parsed.path, endpoint_url=endpoint)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"OUTLAST_CHECKPOINT_STORE {url!r}: file URLs need an absolute path (file:///path)")
        return LocalCheckpointStore(Path(unquote(parsed.path)))
    if "://" in url:
        raise ValueError(f"OUTLAST_CHECKPOINT_STORE {url!r}: unsupported scheme {parsed.scheme!r} "
                         "(use a directory, file:///path or s3://bucket/prefix)")
    return LocalCheckpointStore(Path(url).expanduser())


def _has_object(root: Path, key: str) -> bool:
    try:
        return (root / (validate_key(key) + SUFFIX)).is_file()
    except ValueError:
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
