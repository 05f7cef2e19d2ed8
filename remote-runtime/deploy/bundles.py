"""Deployment bundles: stored as one tar.gz object each (a local directory or S3), unpacked with care.

The store mirrors the checkpoint store (`checkpoint/store.py`): same key rules, same
`file:///`/`s3://` URLs, temp-file-and-rename writes locally, boto3 managed transfers on S3.
Unpacking refuses what could reach outside the version's directory or fill the disk: absolute
paths, `..`, hard links, symlinks that are absolute or climb with `..`, devices, and archives
past the file-count or total-size caps (checked against the sizes the tar declares, before
anything is written).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from ..checkpoint.store import validate_key

MAX_BUNDLE_BYTES = 50 * 1024 * 1024  # compressed, as uploaded
MAX_UNPACKED_BYTES = 200 * 1024 * 1024
MAX_FILES = 10_000
_CHUNK = 1 << 20


class BundleError(Exception):
    """A bundle could not be stored or fetched."""


class UnsafeBundle(BundleError):
    """A bundle holds something unpacking must refuse (a path outside its tree, a link out, a bomb)."""


@dataclass(frozen=True)
class Unpacked:
    files: int
    bytes: int


class BundleStore(Protocol):
    def put(self, key: str, source: Path) -> None: ...

    def get(self, key: str, dest: Path) -> None: ...

    def delete(self, key: str) -> None: ...

    def describe(self) -> str: ...


class LocalBundleStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def path(self, key: str) -> Path:
        return self.root / (validate_key(key) + ".tar.gz")

    def put(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self.path(key), dest)
        except FileNotFoundError:
            raise BundleError(f"no bundle {key!r} in {self.describe()}") from None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def describe(self) -> str:
        return f"local directory {self.root}"


class S3BundleStore:
    def __init__(self, bucket: str, prefix: str = "bundles/", *, client: Any = None,
                 endpoint_url: str | None = None) -> None:
        prefix = prefix.lstrip("/")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        if client is None:
            try:
                import boto3
            except ImportError as exc:
                raise ImportError("the S3 bundle store needs boto3: pip install 'outlast[s3]'") from exc
            client = boto3.client("s3", endpoint_url=endpoint_url)
        self.client = client

    def object_key(self, key: str) -> str:
        return self.prefix + validate_key(key) + ".tar.gz"

    def put(self, key: str, source: Path) -> None:
        with self._errors(key, "upload"):
            self.client.upload_file(str(source), self.bucket, self.object_key(key))

    def get(self, key: str, dest: Path) -> None:
        with self._errors(key, "download"):
            self.client.download_file(self.bucket, self.object_key(key), str(dest))

    def delete(self, key: str) -> None:
        with self._errors(key, "delete"):
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise BundleError(f"could not {action} bundle {key!r} in {self.describe()}: {exc}") from exc


def open_bundle_store(url: str | None, data_dir: Path) -> BundleStore:
    """OUTLAST_BUNDLE_STORE: unset → `<data_dir>/bundles`; a path or file:///path; s3://bucket/prefix."""
    if not url:
        return LocalBundleStore(Path(data_dir) / "bundles")
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        endpoint = os.environ.get("OUTLAST_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
        return S3BundleStore(parsed.netloc, parsed.path or "bundles/", endpoint_url=endpoint)
    if parsed.scheme == "file":
        return LocalBundleStore(Path(unquote(parsed.path)))
    if "://" in url:
        raise ValueError(f"OUTLAST_BUNDLE_STORE {url!r}: use a directory, file:///path or s3://bucket/prefix")
    return LocalBundleStore(Path(url).expanduser())


# --- unpacking ---------------------------------------------------------------------------------------


def _check_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or name.startswith("/"):
        raise UnsafeBundle(f"bundle entry {name!r} points outside the bundle (absolute path or '..')")
    return path


def _check_member(member: tarfile.TarInfo) -> None:
    _check_name(member.name)
    if member.islnk():
        raise UnsafeBundle(f"bundle entry {member.name!r} is a hard link; bundles may not contain hard links")
    if member.issym():
        target = PurePosixPath(member.linkname)
        # Links may only point down from their own directory: a target without `..` cannot leave the
        # tree through any chain of such links, which a lexical check of `..` targets cannot promise.
        if not member.linkname or target.is_absolute() or ".." in target.parts:
            raise UnsafeBundle(f"bundle entry {member.name!r} is a link out of the bundle (to {member.linkname!r})")
    elif not (member.isreg() or member.isdir()):
        raise UnsafeBundle(f"bundle entry {member.name!r} is a device or special file")


def inspect_bundle(path: Path, *, max_files: int = MAX_FILES, max_bytes: int = MAX_UNPACKED_BYTES) -> Unpacked:
    """Check every entry and the totals without writing anything; raises UnsafeBundle or BundleError."""
    files = total = 0
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                _check_member(member)
                files += 1
                total += member.size
                if files > max_files:
                    raise UnsafeBundle(f"bundle has more than {max_files} entries (the limit)")
                if total > max_bytes:
                    raise UnsafeBundle(f"bundle unpacks to more than {max_bytes} bytes (the limit)")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"bundle is not a readable tar.gz archive: {exc}") from exc
    return Unpacked(files=files, bytes=total)


def unpack_bundle(path: Path, dest: Path, *, max_files: int = MAX_FILES,
                  max_bytes: int = MAX_UNPACKED_BYTES) -> Unpacked:
    """Unpack into `dest` (which must not exist), all or nothing: a sibling staging directory is
    renamed into place once every entry is written."""
    summary = inspect_bundle(path, max_files=max_files, max_bytes=max_bytes)
    dest = dest.absolute()
    if dest.exists():
        raise FileExistsError(f"{dest} exists already")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    links: list[tarfile.TarInfo] = []
    written = 0
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                _check_member(member)  # the archive may have changed since it was inspected
                target = staging.joinpath(*PurePosixPath(member.name).parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.issym():
                    links.append(member)  # last: no file is ever written through a link
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    written += _write(tar.extractfile(member), target, member.mode, max_bytes - written)
        for member in links:
            os.symlink(member.linkname, staging.joinpath(*PurePosixPath(member.name).parts))
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _write(src: Any, target: Path, mode: int, budget: int) -> int:
    if src is None:
        raise BundleError(f"no data for bundle entry {target.name}")
    # O_EXCL|O_NOFOLLOW: a repeated entry cannot overwrite or follow anything already there.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o755 if mode & 0o111 else 0o644)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            if size > budget:
                raise UnsafeBundle("bundle unpacks to more bytes than it declares (the limit was reached)")
            out.write(chunk)
    return size
