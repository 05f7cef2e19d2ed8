"""Objects: named files in a local directory or an S3 bucket, each written whole or not at all.

The one storage layer under checkpoint images (`checkpoint/store.py`) and deployment bundles
(`deploy/bundles.py`). A store holds one kind of object (`ObjectKind`: the noun its messages use,
the suffix its names end in, the exceptions it raises) under keys of '/'-separated parts that cannot
leave the store's root. The local store writes through a temp file that is fsynced and renamed, then
fsyncs the directory, so a crash leaves the old object or the new one, never half of one; an S3
upload becomes visible only once complete by itself. The file helpers that do this (`AtomicFile`,
`atomic_write`, `staged_directory`, `create_new`, `fsync_dir`) serve the page pool, archive
unpacking and virtualenv builds too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlparse

__all__ = [
    "MAX_KEY",
    "AtomicFile",
    "LocalObjects",
    "ObjectKind",
    "ObjectStore",
    "S3Location",
    "S3Objects",
    "atomic_write",
    "create_new",
    "fsync_dir",
    "parse_store_url",
    "staged_directory",
]

MAX_KEY = 512
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"  # no "", ".", ".." or hidden names
_KEY = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
_SPOOL = 16 << 20  # S3 transfers of streams stay in memory up to this size, then go through a temp file
_CHUNK = 1 << 20


# --- keys ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectKind:
    """What a store holds, for its names and its errors."""

    noun: str  # "checkpoint": in messages
    suffix: str  # ".tar.zst": so that keys like "run_abc" and "run_abc/1" never clash
    error: type[Exception]  # an object could not be stored or fetched
    missing: type[Exception]  # no object under the key (a subclass of `error`)

    def validate(self, key: str) -> str:
        """Return `key` if it is a valid key, else raise ValueError saying why."""
        if not isinstance(key, str) or not _KEY.fullmatch(key) or ".." in key.split("/") or len(key) > MAX_KEY:
            raise ValueError(f"invalid {self.noun} key {key!r}: use letters, digits and _-./ in '/'-separated "
                             f"parts that do not start with '.' or '-' (at most {MAX_KEY} characters)")
        return key

    def name(self, key: str) -> str:
        """The object's name relative to the store's root or prefix."""
        return self.validate(key) + self.suffix

    def not_found(self, key: str, store: str) -> Exception:
        return self.missing(f"no {self.noun} {key!r} in {store}")


# --- where a store setting points ------------------------------------------------------------------


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # as the URL has it: may be "" or start with "/"
    endpoint_url: str | None


def parse_store_url(url: str | None, setting: str, default: Path) -> Path | S3Location:
    """Where a store setting (`setting` names it in errors) points: unset → `default`; a path or
    file:///path → that directory; s3://bucket/prefix → S3, at the endpoint OUTLAST_S3_ENDPOINT_URL
    or AWS_ENDPOINT_URL names (unset: AWS)."""
    if not url:
        return Path(default)
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{setting} {url!r}: no bucket (use s3://bucket/prefix)")
        endpoint = os.environ.get("OUTLAST_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
        return S3Location(parsed.netloc, parsed.path, endpoint)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{setting} {url!r}: file URLs need an absolute path (file:///path)")
        return Path(unquote(parsed.path))
    if "://" in url:
        raise ValueError(f"{setting} {url!r}: unsupported scheme {parsed.scheme!r} "
                         "(use a directory, file:///path or s3://bucket/prefix)")
    return Path(url).expanduser()


# --- files written whole or not at all ------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    """Make the names created or renamed in `path` survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A file written under a temp name beside `path` (hidden, ending in .tmp) and renamed over it by
    `commit`: readers and crashes see the old content or the new, never part of it. `durable`: the
    file is fsynced before the rename and its directory after, so the new content outlives a power
    loss once `commit` returns. For writes that span calls; `atomic_write` for a block."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        fd, self.temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self.file: IO[bytes] = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            if self.durable:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.temp_name, self.path)
        except BaseException:
            self.abandon()
            raise
        if self.durable:
            fsync_dir(self.path.parent)

    def abandon(self) -> None:
        """Drop what was written; `path` stays as it was. Harmless after `commit`."""
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp_name)


@contextlib.contextmanager
def atomic_write(path: Path, *, durable: bool = True) -> Iterator[IO[bytes]]:
    """A file to write `path`'s new content to; it replaces `path` when the block ends without an error."""
    atomic = AtomicFile(path, durable=durable)
    try:
        yield atomic.file
    except BaseException:
        atomic.abandon()
        raise
    atomic.commit()


@contextlib.contextmanager
def staged_directory(dest: Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """A new directory (0700) beside `dest`, renamed to `dest` when the block ends without an error
    and removed otherwise: `dest` appears complete or not at all. The rename replaces an empty `dest`
    and fails on any other; with `keep_existing`, a `dest` that appeared meanwhile (a concurrent build
    of the same thing) is kept and ours dropped."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield staging
        try:
            staging.rename(dest)
        except OSError:
            if not keep_existing:
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def create_new(path: Path, mode: int = 0o600) -> IO[bytes]:
    """Open a file that must not exist yet for writing. O_EXCL|O_NOFOLLOW: an entry of an archive
    that repeats a name cannot overwrite, or write through a link to, anything already there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    return os.fdopen(fd, "wb")


# --- stores ----------------------------------------------------------------------------------------


class ObjectStore(Protocol):
    """What `LocalObjects` and `S3Objects` both offer. Every method validates its key first (ValueError)."""

    kind: ObjectKind

    def writing(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A file to write the object to; stored when the block ends without an error."""
        ...

    def reading(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """The stored object, open for reading; raises the kind's `missing` if there is none."""
        ...

    def put(self, key: str, source: Path) -> None: ...

    def get(self, key: str, dest: Path) -> None: ...

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def where(self, key: str) -> str:
        """The object's place, for messages."""
        ...

    def describe(self) -> str:
        """Where the objects go, for logs and messages."""
        ...


class LocalObjects:
    """One file per key: `<root>/<key><suffix>`, written as an `AtomicFile`."""

    def __init__(self, kind: ObjectKind, root: Path) -> None:
        self.kind = kind
        self.root = Path(root).absolute()

    def path(self, key: str) -> Path:
        return self.root / self.kind.name(key)

    def where(self, key: str) -> str:
        """The object's place, for messages."""
        return str(self.path(key))

    def describe(self) -> str:
        return f"local directory {self.root}"

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[IO[bytes]]:
        """A file to write the object to; it replaces the stored one when the block ends without an error."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_write(target) as out:
            yield out

    @contextlib.contextmanager
    def reading(self, key: str) -> Iterator[IO[bytes]]:
        """The stored object, open for reading; raises the kind's `missing` if there is none."""
        try:
            source = self.path(key).open("rb")
        except FileNotFoundError:
            raise self.kind.not_found(key, self.describe()) from None
        with source:
            yield source

    def put(self, key: str, source: Path) -> None:
        """Store a copy of the file `source` under `key`."""
        with self.writing(key) as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)

    def get(self, key: str, dest: Path) -> None:
        """Copy the object under `key` to the file `dest`."""
        with self.reading(key) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if there is none. Its folders left empty go too (one per
        run would pile up otherwise); a concurrent put into one of them recreates it."""
        path = self.path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()


class S3Objects:
    """One object per key under `s3://bucket/prefix`, through boto3's managed transfers (multipart for
    large objects). Credentials and region come the usual boto3 way unless a client is given. boto3's
    errors become the kind's `missing` (no such key) or `error` (anything else)."""

    def __init__(self, kind: ObjectKind, bucket: str, prefix: str, *, client: Any = None,
                 endpoint_url: str | None = None, region: str | None = None) -> None:
        if not bucket:
            raise ValueError(f"S3 {kind.noun} store: bucket is empty")
        prefix = prefix.lstrip("/")
        self.kind = kind
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        if client is None:
            try:
                import boto3
            except ImportError as exc:
                raise ImportError(f"the S3 {kind.noun} store needs boto3: pip install 'outlast[s3]'") from exc
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.client = client

    def object_key(self, key: str) -> str:
        return self.prefix + self.kind.name(key)

    def where(self, key: str) -> str:
        """The object's place, for messages."""
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[IO[bytes]]:
        """A file to write the object to; uploaded when the block ends without an error."""
        name = self.object_key(key)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
            yield spool
            spool.seek(0)
            with self._errors(key, "upload"):
                self.client.upload_fileobj(spool, self.bucket, name)

    @contextlib.contextmanager
    def reading(self, key: str) -> Iterator[IO[bytes]]:
        """The stored object, downloaded and open for reading; raises the kind's `missing` if there is none."""
        name = self.object_key(key)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
            with self._errors(key, "download"):
                self.client.download_fileobj(self.bucket, name, spool)
            spool.seek(0)
            yield spool

    def put(self, key: str, source: Path) -> None:
        """Upload the file `source` under `key`."""
        name = self.object_key(key)
        with self._errors(key, "upload"):
            self.client.upload_file(str(source), self.bucket, name)

    def get(self, key: str, dest: Path) -> None:
        """Download the object under `key` to the file `dest`."""
        name = self.object_key(key)
        with self._errors(key, "download"):
            self.client.download_file(self.bucket, name, str(dest))

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if there is none."""
        name = self.object_key(key)
        with self._errors(key, "delete"):
            self.client.delete_object(Bucket=self.bucket, Key=name)  # no error if absent

    def exists(self, key: str) -> bool:
        name = self.object_key(key)
        try:
            with self._errors(key, "look up"):
                self.client.head_object(Bucket=self.bucket, Key=name)
        except self.kind.missing:
            return False
        return True

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise self.kind.not_found(key, self.describe()) from None
            raise self._failed(key, action, exc) from exc
        except (BotoCoreError, Boto3Error) as exc:  # Boto3Error: upload_file wraps ClientError in one
            raise self._failed(key, action, exc) from exc

    def _failed(self, key: str, action: str, exc: Exception) -> Exception:
        return self.kind.error(f"could not {action} {self.kind.noun} {key!r} in {self.describe()}: {exc}")
