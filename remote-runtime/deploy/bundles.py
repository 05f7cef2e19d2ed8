"""Deployment bundles: stored as one tar.gz object each (a local directory or S3), unpacked with care.

The stores are the shared object layer (`outlast.runtime.objects`, as checkpoint images are):
keys `<env>/<version>` name `<key>.tar.gz`, `file:///`/`s3://` URLs, atomic and durable writes
locally, boto3 managed transfers on S3. Unpacking refuses what could reach outside the version's
directory or fill the disk: absolute paths, `..`, hard links, symlinks that are absolute or climb
with `..`, devices, and archives past the file-count or total-size caps (checked against the sizes
the tar declares, before anything is written).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from ..objects import LocalObjects, ObjectKind, S3Location, S3Objects, create_new, parse_store_url, staged_directory

MAX_BUNDLE_BYTES = 50 * 1024 * 1024  # compressed, as uploaded
MAX_UNPACKED_BYTES = 200 * 1024 * 1024
MAX_FILES = 10_000
_CHUNK = 1 << 20


class BundleError(Exception):
    """A bundle could not be stored or fetched, or is not a readable archive."""


class BundleMissing(BundleError):
    """No bundle is stored under that key."""


class UnsafeBundle(BundleError):
    """A bundle holds something unpacking must refuse (a path outside its tree, a link out, a bomb)."""


BUNDLES = ObjectKind("bundle", ".tar.gz", BundleError, BundleMissing)


@dataclass(frozen=True)
class Unpacked:
    files: int
    bytes: int


class BundleStore(Protocol):
    def put(self, key: str, source: Path) -> None: ...

    def get(self, key: str, dest: Path) -> None: ...

    def describe(self) -> str: ...


class LocalBundleStore(LocalObjects):
    """Bundles as files `<root>/<env>/<version>.tar.gz`."""

    def __init__(self, root: Path) -> None:
        super().__init__(BUNDLES, root)


class S3BundleStore(S3Objects):
    """Bundles as objects `<prefix><env>/<version>.tar.gz` in `bucket`."""

    def __init__(self, bucket: str, prefix: str = "bundles/", *, client: Any = None,
                 endpoint_url: str | None = None) -> None:
        super().__init__(BUNDLES, bucket, prefix, client=client, endpoint_url=endpoint_url)


def open_bundle_store(url: str | None, data_dir: Path) -> BundleStore:
    """The store OUTLAST_BUNDLE_STORE names (see `objects.parse_store_url`); unset → `<data_dir>/bundles`.
    An s3://bucket URL without a path keeps the bundles under `bundles/`."""
    where = parse_store_url(url, "OUTLAST_BUNDLE_STORE", Path(data_dir) / "bundles")
    if isinstance(where, S3Location):
        return S3BundleStore(where.bucket, where.prefix or "bundles/", endpoint_url=where.endpoint_url)
    return LocalBundleStore(where)


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
    links: list[tarfile.TarInfo] = []
    written = 0
    with staged_directory(dest) as staging:
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
    return summary


def _write(src: Any, target: Path, mode: int, budget: int) -> int:
    if src is None:
        raise BundleError(f"no data for bundle entry {target.name}")
    size = 0
    with create_new(target, 0o755 if mode & 0o111 else 0o644) as out:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            if size > budget:
                raise UnsafeBundle("bundle unpacks to more bytes than it declares (the limit was reached)")
            out.write(chunk)
    return size
