"""A content-addressed pool of 4 KiB memory pages shared by the checkpoints of one local store.

Task processes forked from one fork server share most of their memory page for page, so the
`pages-*.img` files of their CRIU images are mostly the same pages. Each `put` hashes every page
(sha256 cut to 16 bytes: CPUs hash it in hardware) and writes only the pages the pool does not
hold yet, into one new *pack*: zstd-1 frames of up to 256 pages, followed by the pages' hashes,
the frames' offsets and a footer with a checksum over both. A checkpoint then records its pages
files as runs of (pack, first page, count). A pack no key uses any more is deleted.

Layout under `<store>/.pages/`: `lock` (flock: several runtime processes may share a store; its
first 8 bytes count changes to `packs/`), `packs/<32 hex>.pack`, `users/<pack>/<key hash>` (an
empty file per key using the pack) and `keys/<key hash>` (the packs a key uses): a put or delete
touches only its own key's files, however many keys the store holds. Pack files never change once
renamed into place, so the index of the pages they hold is cached in memory; puts and deletes
hold the lock exclusively, gets shared (so no pack they read disappears meanwhile).

A pooled file's digest in the archive listing is the sha256 of its pages' hashes in order, not of
its bytes: put hashes each page anyway, and get checks every page it writes back against it, so
neither side hashes the data twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import struct
import tempfile
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import zstandard

from .archive import LEVEL, CheckpointStoreError

PAGE = 4096
BLOCK_PAGES = 256  # one zstd frame per MiB of new pages: compresses as well as a stream, reads back in pieces
_HASH = 16
_MAGIC = b"OLPAGES1"
_FOOTER = struct.Struct("<QQQ16s8s")  # pages, blocks, index offset, index checksum, magic
_PACK_ID = re.compile(r"[0-9a-f]{32}")

Run = list[Any]  # [pack id, first page, page count]
_POOLS: weakref.WeakValueDictionary[Path, PagePool] = weakref.WeakValueDictionary()
_POOLS_LOCK = threading.Lock()


def poolable(images_dir: Path) -> list[Path]:
    """The pages files of a CRIU image directory (one with pagemaps) that hold whole pages."""
    if not any(images_dir.glob("pagemap-*.img")):
        return []
    return sorted(p for p in images_dir.glob("pages-*.img")
                  if p.is_file() and not p.is_symlink() and p.stat().st_size % PAGE == 0)


class PagePool:
    """The pool under `root`. Thread-safe; processes sharing `root` coordinate through flock."""

    def __init__(self, root: Path, has_object: Callable[[str], bool]) -> None:
        self.root = root
        self.packs = root / "packs"
        self.users = root / "users"  # users/<pack>/<key hash>: an empty file per key using the pack
        self.keys = root / "keys"  # keys/<key hash>: {"key", "packs"}: the packs a key uses
        self._has_object = has_object
        self._mutex = threading.Lock()  # guards the in-memory index below
        self._known: dict[str, list[bytes]] = {}  # pack id -> its page hashes
        self._index: dict[bytes, tuple[str, int]] = {}  # page hash -> (pack id, page number)
        self._generation = -1  # of the packs directory when the index was last synced
        self._reconciled = False
        self._lock_fd = -1  # while writing: the lock file, which also holds the generation

    @classmethod
    def shared(cls, root: Path, has_object: Callable[[str], bool]) -> PagePool:
        """The pool of `root` for this process: store objects over one directory share one index in memory."""
        with _POOLS_LOCK:
            pool = _POOLS.get(root)
            if pool is None:
                pool = _POOLS[root] = cls(root, has_object)
            return pool

    def exists(self) -> bool:
        return self.root.is_dir()

    @contextlib.contextmanager
    def _flock(self, exclusive: bool) -> Iterator[int]:
        for folder in (self.packs, self.users, self.keys):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A new open file description per call: flock then also excludes other threads of this process.
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def writing(self) -> Iterator[PoolWrite]:
        """Exclusive access for a put or a delete."""
        with self._mutex, self._flock(exclusive=True) as fd:
            self._lock_fd = fd
            try:
                if not self._reconciled:
                    self._reconcile()
                    self._reconciled = True
                write = PoolWrite(self)
                try:
                    yield write
                finally:
                    write.abandon()
            finally:
                self._lock_fd = -1

    @contextlib.contextmanager
    def reading(self) -> Iterator[PoolRead]:
        """Shared access for a get: no pack can disappear meanwhile."""
        with self._flock(exclusive=False):
            reader = PoolRead(self)
            try:
                yield reader
            finally:
                reader.close()

    # -- generation: bumped whenever packs come or go, so that syncing the index is one pread -----

    def _read_generation(self) -> int:
        data = os.pread(self._lock_fd, 8, 0)
        return int.from_bytes(data, "little") if len(data) == 8 else 0

    def _bump_generation(self) -> None:
        """Say that packs came or went. Our own changes are already in our index, so if it was up to
        date it stays so. Not fsynced: after a crash every process starts with an empty index."""
        generation = self._read_generation() + 1
        os.pwrite(self._lock_fd, generation.to_bytes(8, "little"), 0)
        if self._generation == generation - 1:
            self._generation = generation

    # -- references: per-key and per-pack files, so a put or delete costs the same with 10 or 10,000 keys --

    def packs_of(self, key: str) -> set[str]:
        try:
            doc = json.loads((self.keys / _key_name(key)).read_bytes())
            return {str(pack) for pack in doc["packs"] if _PACK_ID.fullmatch(str(pack))}
        except FileNotFoundError:
            return set()
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointStoreError(f"page pool {self.root}: unreadable record of key {key!r}: {exc}") from exc

    def _record(self, key: str, packs: set[str], durable: bool) -> None:
        """Write which packs `key` uses. Growing records must be on disk before the object that needs
        them; a shrunk record lost in a crash only keeps a pack a little longer (see `_reconcile`)."""
        path = self.keys / _key_name(key)
        if packs:
            _atomic_write(path, json.dumps({"key": key, "packs": sorted(packs)}).encode(), durable)
        else:
            path.unlink(missing_ok=True)

    def _add_user(self, pack: str, key: str) -> None:
        folder = self.users / pack
        created = not folder.is_dir()
        folder.mkdir(exist_ok=True, mode=0o700)
        os.close(os.open(folder / _key_name(key), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        _fsync_dir(folder)
        if created:
            _fsync_dir(self.users)

    def _drop_user(self, pack: str, key: str) -> None:
        folder = self.users / pack
        (folder / _key_name(key)).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError, OSError):
            folder.rmdir()  # fails while other keys use the pack
        if not folder.exists():
            self._delete_pack(pack)

    def _delete_pack(self, pack: str) -> None:
        (self.packs / f"{pack}.pack").unlink(missing_ok=True)
        for digest in self._known.pop(pack, []):
            if self._index.get(digest, ("",))[0] == pack:
                del self._index[digest]
        self._bump_generation()

    def _reconcile(self) -> None:
        """Once per process, under the lock: undo what crashes left behind. Looks at every key, so
        not on each put: references of keys whose object is gone (a delete that crashed between
        removing the object and releasing its packs), user entries no key record backs (a put or
        delete that crashed between the two), packs without users (a put that crashed before
        referencing its pack) and temp files. No put is mid-way meanwhile: we hold the lock."""
        records: dict[str, set[str]] = {}
        for path in self.keys.iterdir():
            if path.name.startswith("."):
                path.unlink(missing_ok=True)
                continue
            try:
                doc = json.loads(path.read_bytes())
                key, packs = str(doc["key"]), {str(p) for p in doc["packs"]}
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: keep its packs, to be safe
            if self._has_object(key):
                records[path.name] = packs
            else:
                path.unlink(missing_ok=True)
        unreadable = {p.name for p in self.keys.iterdir()} - records.keys()
        for folder in self.users.iterdir():
            for user in folder.iterdir():
                if user.name not in unreadable and folder.name not in records.get(user.name, ()):
                    user.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
        for path in self.packs.iterdir():
            if path.name.startswith(".") or not (self.users / path.stem).is_dir():
                path.unlink(missing_ok=True)
        self._bump_generation()

    def _sync_index(self) -> None:
        """Learn packs other processes (or earlier puts) wrote; forget deleted ones. Caller holds the lock."""
        generation = self._read_generation()
        if generation == self._generation:
            return
        self._generation = generation
        on_disk = {p.stem for p in self.packs.glob("*.pack") if _PACK_ID.fullmatch(p.stem)}
        gone = self._known.keys() - on_disk
        for pack in gone:
            del self._known[pack]
        if gone:
            self._index = {}
            for pack, hashes in self._known.items():
                for number, digest in enumerate(hashes):
                    self._index.setdefault(digest, (pack, number))
        for pack in sorted(on_disk - self._known.keys()):
            try:
                with (self.packs / f"{pack}.pack").open("rb") as f:
                    hashes, _ = _read_index(f)
            except (OSError, CheckpointStoreError):
                hashes = []  # a damaged pack: new puts do not build on it
            self._known[pack] = hashes
            for number, digest in enumerate(hashes):
                self._index.setdefault(digest, (pack, number))


class PoolWrite:
    """One put's (or delete's) changes to the pool, made under the exclusive lock."""

    def __init__(self, pool: PagePool) -> None:
        self.pool = pool
        pool._sync_index()
        self.new_id = uuid.uuid4().hex
        self._new: dict[bytes, int] = {}  # hash -> page number in the new pack
        self._hashes: list[bytes] = []
        self._pending: list[memoryview] = []
        self._offsets: list[int] = [0]
        self._tmp: IO[bytes] | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._frames: deque[Future[bytes]] = deque()
        self._compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True)
        self.new_bytes = 0  # size of the pack this put wrote

    def add_file(self, path: Path) -> tuple[int, str, list[Run]]:
        """Pool the pages of `path`; return its size, digest (sha256 of its pages' hashes) and runs of pages."""
        listed = hashlib.sha256()
        page_hash = hashlib.sha256
        runs: list[Run] = []
        last: Run = ["", -2, 0]
        size = 0
        index, new, new_id = self.pool._index, self._new, self.new_id
        with path.open("rb") as f:
            while chunk := f.read(BLOCK_PAGES * PAGE):
                size += len(chunk)
                view = memoryview(chunk)
                for offset in range(0, len(chunk), PAGE):
                    page = view[offset:offset + PAGE]
                    digest = page_hash(page).digest()[:_HASH]
                    listed.update(digest)
                    where = index.get(digest)
                    if where is None:
                        number = new.get(digest)
                        where = (new_id, self._append(digest, page) if number is None else number)
                    if last[0] == where[0] and last[1] + last[2] == where[1]:
                        last[2] += 1
                    else:
                        last = [where[0], where[1], 1]
                        runs.append(last)
        if size % PAGE:
            raise CheckpointStoreError(f"{path}: {size} bytes is not a whole number of pages")
        return size, listed.hexdigest(), runs

    def _append(self, digest: bytes, page: memoryview) -> int:
        number = len(self._hashes)
        self._new[digest] = number
        self._hashes.append(digest)
        self._pending.append(page)  # a view into the chunk just read: no copy until the block is joined
        if len(self._pending) == BLOCK_PAGES:
            self._flush_block()
        return number

    def _flush_block(self) -> None:
        if not self._pending:
            return
        if self._tmp is None:
            fd, name = tempfile.mkstemp(prefix=f".{self.new_id}.", suffix=".tmp", dir=self.pool.packs)
            self._tmp = os.fdopen(fd, "wb")
            self._tmp_name = name
            # zstd lets go of the GIL: blocks compress on a second core while this thread hashes pages.
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="outlast-pagepool")
        self._frames.append(self._worker.submit(self._compressor.compress, b"".join(self._pending)))
        self._pending = []
        while len(self._frames) > 2:  # bounds the memory held by blocks waiting to be written
            self._write_frame()

    def _write_frame(self) -> None:
        assert self._tmp is not None
        frame = self._frames.popleft().result()
        self._tmp.write(frame)
        self._offsets.append(self._offsets[-1] + len(frame))

    def commit_pack(self) -> str | None:
        """Write the new pages (if any) as a pack; return its id."""
        self._flush_block()
        if self._tmp is None:
            return None
        while self._frames:
            self._write_frame()
        index = b"".join(self._hashes) + struct.pack(f"<{len(self._offsets)}Q", *self._offsets)
        checksum = hashlib.blake2b(index, digest_size=16).digest()
        blocks = len(self._offsets) - 1
        self._tmp.write(index + _FOOTER.pack(len(self._hashes), blocks, self._offsets[-1], checksum, _MAGIC))
        self._tmp.flush()
        os.fsync(self._tmp.fileno())
        self.new_bytes = self._tmp.tell()
        self._tmp.close()
        self._tmp = None
        os.replace(self._tmp_name, self.pool.packs / f"{self.new_id}.pack")
        _fsync_dir(self.pool.packs)
        self.pool._bump_generation()
        self.pool._known[self.new_id] = self._hashes
        for number, digest in enumerate(self._hashes):
            self.pool._index.setdefault(digest, (self.new_id, number))
        return self.new_id

    def reference(self, key: str, packs: set[str]) -> set[str]:
        """Add `key` to the users of `packs` (durably); return the packs it was not using before."""
        current = self.pool.packs_of(key)
        added = packs - current
        for pack in sorted(packs):
            # Even for packs the record names: a crash may have lost a shrunk record after its users went.
            if pack in added or not (self.pool.users / pack / _key_name(key)).exists():
                self.pool._add_user(pack, key)
        if added:
            self.pool._record(key, current | packs, durable=True)
        return added

    def release(self, key: str, keep: AbstractSet[str] = frozenset(), only: AbstractSet[str] | None = None) -> None:
        """`key` no longer uses the packs `only` names (default: any), except `keep`; packs left
        without users are deleted."""
        current = self.pool.packs_of(key)
        drop = {pack for pack in current if pack not in keep and (only is None or pack in only)}
        if not drop:
            return
        self.pool._record(key, current - drop, durable=False)
        for pack in sorted(drop):
            self.pool._drop_user(pack, key)

    def abandon(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(cancel_futures=True)
            self._worker = None
        if self._tmp is not None:
            self._tmp.close()
            self._tmp = None
            with contextlib.suppress(OSError):
                os.unlink(self._tmp_name)


class PoolRead:
    """Rebuilds pages files from runs, for `archive.unpack` (one get, under the shared lock)."""

    def __init__(self, pool: PagePool) -> None:
        self.pool = pool
        self._packs: dict[str, _PackReader] = {}

    def fill(self, target: Path, runs: Any, what: str) -> tuple[int, str]:
        """Write the pages `runs` name to the new file `target`; return its size and digest."""
        if not isinstance(runs, list):
            raise CheckpointStoreError(f"{what} is corrupt: page runs of {target.name} are not a list")
        listed = hashlib.sha256()
        page_hash = hashlib.sha256
        size = 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for run in runs:
                if not (isinstance(run, list) and len(run) == 3 and isinstance(run[0], str)
                        and _PACK_ID.fullmatch(run[0]) and all(type(n) is int and n >= 0 for n in run[1:])):
                    raise CheckpointStoreError(f"{what} is corrupt: bad page run {run!r} in {target.name}")
                pack = self._pack(run[0], what)
                for data in pack.pages(run[1], run[2], what):
                    view = memoryview(data)
                    for offset in range(0, len(data), PAGE):
                        listed.update(page_hash(view[offset:offset + PAGE]).digest()[:_HASH])
                    out.write(data)
                    size += len(data)
        return size, listed.hexdigest()

    def _pack(self, pack: str, what: str) -> _PackReader:
        if pack not in self._packs:
            try:
                f = (self.pool.packs / f"{pack}.pack").open("rb")
            except FileNotFoundError:
                raise CheckpointStoreError(f"{what} is corrupt or truncated: its page pack {pack} is missing "
                                           f"from {self.pool.packs}") from None
            self._packs[pack] = _PackReader(f, pack)
        return self._packs[pack]

    def close(self) -> None:
        for reader in self._packs.values():
            reader.file.close()


class _PackReader:
    def __init__(self, file: IO[bytes], pack: str) -> None:
        self.file = file
        self.pack = pack
        self._offsets: list[int] | None = None
        self._count = 0
        self._block = -1
        self._data = b""
        self._decompressor = zstandard.ZstdDecompressor()

    def pages(self, first: int, count: int, what: str) -> Iterator[bytes]:
        if self._offsets is None:
            try:
                hashes, self._offsets = _read_index(self.file)
            except CheckpointStoreError as exc:
                raise CheckpointStoreError(f"{what} is corrupt or truncated: page pack {self.pack}: {exc}") from None
            self._count = len(hashes)
        if count == 0 or first + count > self._count:
            raise CheckpointStoreError(f"{what} is corrupt: pages {first}+{count} are not in page pack {self.pack} "
                                       f"({self._count} pages)")
        number = first
        while number < first + count:
            block, start = divmod(number, BLOCK_PAGES)
            data = self._load(block, what)
            take = min(first + count - number, BLOCK_PAGES - start)
            yield data[start * PAGE:(start + take) * PAGE]
            number += take

    def _load(self, block: int, what: str) -> bytes:
        if block != self._block:
            assert self._offsets is not None
            begin, end = self._offsets[block], self._offsets[block + 1]
            self.file.seek(begin)
            frame = self.file.read(end - begin)
            expected = min(BLOCK_PAGES, self._count - block * BLOCK_PAGES) * PAGE
            try:
                data = self._decompressor.decompress(frame, max_output_size=expected)
            except zstandard.ZstdError as exc:
                raise CheckpointStoreError(f"{what} is corrupt: page pack {self.pack} block {block}: {exc}") from exc
            if len(data) != expected:
                raise CheckpointStoreError(f"{what} is corrupt: page pack {self.pack} block {block} holds "
                                           f"{len(data)} bytes, not {expected}")
            self._block, self._data = block, data
        return self._data


def _read_index(f: IO[bytes]) -> tuple[list[bytes], list[int]]:
    """A pack's page hashes and frame offsets, checked against the footer's checksum."""
    end = f.seek(0, os.SEEK_END)
    if end < _FOOTER.size:
        raise CheckpointStoreError("too short for a page pack")
    f.seek(end - _FOOTER.size)
    pages, blocks, index_at, checksum, magic = _FOOTER.unpack(f.read(_FOOTER.size))
    length = pages * _HASH + (blocks + 1) * 8
    if magic != _MAGIC or index_at + length + _FOOTER.size != end or blocks != -(-pages // BLOCK_PAGES):
        raise CheckpointStoreError("not a page pack, or a truncated one")
    f.seek(index_at)
    index = f.read(length)
    if hashlib.blake2b(index, digest_size=16).digest() != checksum:
        raise CheckpointStoreError("its index does not match its checksum")
    hashes = [index[i:i + _HASH] for i in range(0, pages * _HASH, _HASH)]
    offsets = list(struct.unpack_from(f"<{blocks + 1}Q", index, pages * _HASH))
    if offsets[0] != 0 or offsets[-1] != index_at or any(a >= b for a, b in itertools.pairwise(offsets)):
        raise CheckpointStoreError("its frame offsets are inconsistent")
    return hashes, offsets


def _key_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]  # keys may be longer than a file name


def _atomic_write(path: Path, body: bytes, durable: bool) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
