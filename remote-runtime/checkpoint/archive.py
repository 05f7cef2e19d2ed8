"""One checkpoint image directory as one object: a tar stream compressed with zstd level 1.

The tar's last member, `.outlast-archive.json`, lists every file with its size and sha256. zstd's
own frame checksum is only checked when the frame is read to its end, and a stream cut short just
reads as a shorter one, so this listing is what tells a complete archive from a truncated one
(cut at a member boundary, tarfile sees a normal end) or a corrupt one. Unpacking goes into a
fresh sibling directory that is renamed into place only once everything checked out.

Files kept elsewhere (the local store's page pool) are listed too, but their content is replaced by
a reference under the listing's "pooled" key (format 2); unpacking asks a `fill` callback to write
them back and checks them against the listing like the others.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any

import zstandard

from ..objects import create_new, staged_directory
from .criu import CheckpointError

LEVEL = 1  # about 4x on small images at a few hundred MB/s; higher levels cost dump latency
LISTING = ".outlast-archive.json"
_FORMAT = 1
_FORMAT_POOLED = 2  # the listing also says where the pooled files' content is

# Writes a pooled file into the new file at the path given, from its reference; returns its size and the
# digest its pool lists it with (the local page pool: sha256 over its pages' hashes, see pagepool.py).
Fill = Callable[[Path, Any, str], tuple[int, str]]
_CHUNK = 1 << 20


class CheckpointStoreError(CheckpointError):
    """A checkpoint could not be stored or fetched, or the stored object is corrupt or truncated."""


class CheckpointMissing(CheckpointStoreError):
    """No checkpoint is stored under that key."""


class _Hashing:
    """Read-through wrapper that hashes what tarfile copies out of a file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha256.update(data)
        return data


def pack(images_dir: Path, out: IO[bytes], pooled: Mapping[str, tuple[int, str, Any]] | None = None) -> int:
    """Write `images_dir` (regular files and directories only) to `out` as tar + zstd; return the
    number of file bytes packed. Streams: memory use does not grow with the images. Files named in
    `pooled` (name -> size, sha256, reference) are listed with their reference instead of packed."""
    pooled = pooled or {}
    if not images_dir.is_dir():
        raise NotADirectoryError(f"checkpoint image directory {images_dir} does not exist")
    listing: dict[str, list[Any]] = {}
    compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True)
    with compressor.stream_writer(out, closefd=False) as zst, tarfile.open(fileobj=zst, mode="w|") as tar:
        for path in sorted(images_dir.rglob("*")):
            name = path.relative_to(images_dir).as_posix()
            if name == LISTING:
                raise CheckpointStoreError(f"{path}: the name {LISTING} is reserved for the archive listing")
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise CheckpointStoreError(f"{path} is not a regular file or directory; refusing to pack it")
            if path.is_dir():
                tar.addfile(_info(name, tarfile.DIRTYPE, 0))
                continue
            if name in pooled:
                listing[name] = list(pooled[name][:2])
                continue
            with path.open("rb") as f:
                info = _info(name, tarfile.REGTYPE, os.fstat(f.fileno()).st_size)
                hashing = _Hashing(f)
                tar.addfile(info, hashing)  # type: ignore[arg-type] - tarfile only calls read()
            listing[name] = [info.size, hashing.sha256.hexdigest()]
        doc: dict[str, Any] = {"format": _FORMAT, "files": listing}
        if pooled:
            doc = {"format": _FORMAT_POOLED, "files": listing, "pooled": {k: v[2] for k, v in pooled.items()}}
        body = json.dumps(doc, separators=(",", ":")).encode()
        tar.addfile(_info(LISTING, tarfile.REGTYPE, len(body)), io.BytesIO(body))
    return sum(size for size, _ in listing.values())


def unpack(source: IO[bytes], dest_dir: Path, what: str, fill: Fill | None = None) -> None:
    """Unpack an archive read from `source` into `dest_dir` (new or empty). `what` names the object
    in error messages. Raises CheckpointStoreError and leaves no `dest_dir` content if the archive is
    corrupt, truncated, or holds anything but plain files and directories inside the archive root.
    `fill` writes back the pooled files of a format 2 archive (see the module docstring)."""
    dest_dir = dest_dir.absolute()
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise FileExistsError(f"{dest_dir} exists and is not an empty directory; unpack into a new one")
    # 0700 (as staged directories are): the images hold the task's memory, secrets included.
    with staged_directory(dest_dir) as staging:
        try:
            _extract(source, staging, what, fill)
        except (tarfile.TarError, zstandard.ZstdError, EOFError, ValueError) as exc:
            raise CheckpointStoreError(f"{what} is corrupt or truncated: {exc}") from exc
        except OSError as exc:  # reading the source or writing the files
            raise CheckpointStoreError(f"could not unpack {what} into {dest_dir}: {exc}") from exc


def _extract(source: IO[bytes], staging: Path, what: str, fill: Fill | None) -> None:
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=_CHUNK, closefd=False)
    found: dict[str, list[Any]] = {}
    listing: dict[str, list[Any]] | None = None
    pooled: dict[str, Any] = {}
    with reader, tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            if listing is not None:
                raise CheckpointStoreError(f"{what}: entry {member.name!r} after the archive listing")
            if member.name == LISTING and member.isreg():
                listing, pooled = _read_listing(tar.extractfile(member), what)
                continue
            target = staging.joinpath(*_safe_parts(member, what))
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            found[member.name] = [member.size, _write(tar.extractfile(member), target)]
        # Read to the frame's end so zstd checks its checksum over the tar padding too.
        while reader.read(_CHUNK):
            pass
    if listing is None:
        raise CheckpointStoreError(f"{what} is truncated: its archive listing is missing")
    for name, reference in sorted(pooled.items()):
        if fill is None:
            raise CheckpointStoreError(f"{what} keeps {name} in a page pool, which this store does not have")
        member = tarfile.TarInfo(name)
        target = staging.joinpath(*_safe_parts(member, what))
        if name in found or target.exists():
            raise CheckpointStoreError(f"{what} is corrupt: {name} is both packed and pooled")
        target.parent.mkdir(parents=True, exist_ok=True)
        found[name] = list(fill(target, reference, what))
    if found != listing:
        bad = sorted(k for k in found.keys() | listing.keys() if found.get(k) != listing.get(k))
        raise CheckpointStoreError(f"{what} is corrupt or truncated: {', '.join(bad)} differ from its listing")


def _safe_parts(member: tarfile.TarInfo, what: str) -> tuple[str, ...]:
    if not (member.isreg() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise CheckpointStoreError(f"{what}: refusing archive entry {member.name!r} ({kind})")
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in member.name:
        raise CheckpointStoreError(f"{what}: refusing archive entry {member.name!r} (path outside the archive)")
    return path.parts


def _write(src: IO[bytes] | None, target: Path) -> str:
    if src is None:
        raise CheckpointStoreError(f"no data for {target.name}")
    digest = hashlib.sha256()
    with create_new(target) as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _read_listing(src: IO[bytes] | None, what: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    try:
        doc = json.loads(src.read() if src else b"")
        files = doc["files"]
        pooled = doc.get("pooled", {}) if doc["format"] == _FORMAT_POOLED else {}
        if doc["format"] not in (_FORMAT, _FORMAT_POOLED) or not isinstance(files, dict) \
                or not isinstance(pooled, dict):
            raise ValueError(f"unknown archive format {doc['format']!r}")
        return {str(name): list(entry) for name, entry in files.items()}, {str(k): v for k, v in pooled.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointStoreError(f"{what}: unreadable archive listing: {exc}") from exc


def _info(name: str, kind: bytes, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = 0o700 if kind == tarfile.DIRTYPE else 0o600
    return info
