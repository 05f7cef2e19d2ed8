"""Page packs: the files a page pool (`pagepool`) keeps memory pages in, written once and never changed.

A pack is zstd-1 frames of up to 256 pages each, followed by the pages' hashes (sha256 cut to 16
bytes), the frames' offsets and a footer with a checksum over both. Pages are named by their
place: (pack id, page number). `PackWriter` writes a new pack, `PageFiller` writes pages files back
from runs of pages (`pageindex` says which pages the packs on disk hold).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import struct
from collections import deque
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import zstandard

from ..objects import AtomicFile, create_new
from .archive import LEVEL, CheckpointStoreError
from .pagecache import PageCache, copy_pages

PAGE = 4096
BLOCK_PAGES = 256  # one zstd frame per MiB of new pages: compresses as well as a stream, reads back in pieces
HASH_BYTES = 16
PACK_ID = re.compile(r"[0-9a-f]{32}")
_MAGIC = b"OLPAGES1"
_FOOTER = struct.Struct("<QQQ16s8s")  # pages, blocks, index offset, index checksum, magic



def page_hash(page: bytes | memoryview) -> bytes:
    """What names a page: CPUs compute sha256 in hardware, and 16 bytes of it cannot collide by chance."""
    return hashlib.sha256(page).digest()[:HASH_BYTES]


class PackWriter:
    """A new pack at `path`: pages are added one by one and compressed a block at a time on a second
    core; `commit` writes the index and renames the pack into place (see `objects.AtomicFile`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hashes: list[bytes] = []  # of the pages in the pack, in order
        self._numbers: dict[bytes, int] = {}  # hash -> page number
        self._pending: list[memoryview] = []
        self._offsets: list[int] = [0]
        self._file: AtomicFile | None = None  # from the first full block on
        self._worker: ThreadPoolExecutor | None = None
        self._frames: deque[Future[bytes]] = deque()
        self._compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True)

    def add(self, digest: bytes, page: memoryview) -> int:
        """The number of the page with this hash in the pack, adding `page` if it is not there yet."""
        number = self._numbers.get(digest)
        if number is not None:
            return number
        number = len(self.hashes)
        self._numbers[digest] = number
        self.hashes.append(digest)
        self._pending.append(page)  # a view into the chunk just read: no copy until the block is joined
        if len(self._pending) == BLOCK_PAGES:
            self._flush_block()
        return number

    def _flush_block(self) -> None:
        if not self._pending:
            return
        if self._file is None:
            self._file = AtomicFile(self.path)
            # zstd lets go of the GIL: blocks compress on a second core while the caller hashes pages.
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="outlast-pagepool")
        assert self._worker is not None
        self._frames.append(self._worker.submit(self._compressor.compress, b"".join(self._pending)))
        self._pending = []
        while len(self._frames) > 2:  # bounds the memory held by blocks waiting to be written
            self._write_frame()

    def _write_frame(self) -> None:
        assert self._file is not None
        frame = self._frames.popleft().result()
        self._file.file.write(frame)
        self._offsets.append(self._offsets[-1] + len(frame))

    def commit(self) -> int:
        """Write the pack durably under its name; return its size (0: no pages were added, no pack)."""
        self._flush_block()
        if self._file is None:
            return 0
        while self._frames:
            self._write_frame()
        index = b"".join(self.hashes) + struct.pack(f"<{len(self._offsets)}Q", *self._offsets)
        checksum = hashlib.blake2b(index, digest_size=16).digest()
        blocks = len(self._offsets) - 1
        out = self._file.file
        out.write(index + _FOOTER.pack(len(self.hashes), blocks, self._offsets[-1], checksum, _MAGIC))
        size = out.tell()
        self._file.commit()
        self._file = None
        return size

    def abandon(self) -> None:
        """Stop the compressing thread; drop the pack unless it was committed."""
        if self._worker is not None:
            self._worker.shutdown(cancel_futures=True)
            self._worker = None
        if self._file is not None:
            self._file.abandon()
            self._file = None


def read_index(f: IO[bytes]) -> tuple[list[bytes], list[int]]:
    """A pack's page hashes and frame offsets, checked against the footer's checksum."""
    end = f.seek(0, os.SEEK_END)
    if end < _FOOTER.size:
        raise CheckpointStoreError("too short for a page pack")
    f.seek(end - _FOOTER.size)
    pages, blocks, index_at, checksum, magic = _FOOTER.unpack(f.read(_FOOTER.size))
    length = pages * HASH_BYTES + (blocks + 1) * 8
    if magic != _MAGIC or index_at + length + _FOOTER.size != end or blocks != -(-pages // BLOCK_PAGES):
        raise CheckpointStoreError("not a page pack, or a truncated one")
    f.seek(index_at)
    index = f.read(length)
    if hashlib.blake2b(index, digest_size=16).digest() != checksum:
        raise CheckpointStoreError("its index does not match its checksum")
    hashes = [index[i:i + HASH_BYTES] for i in range(0, pages * HASH_BYTES, HASH_BYTES)]
    offsets = list(struct.unpack_from(f"<{blocks + 1}Q", index, pages * HASH_BYTES))
    if offsets[0] != 0 or offsets[-1] != index_at or any(a >= b for a, b in itertools.pairwise(offsets)):
        raise CheckpointStoreError("its frame offsets are inconsistent")
    return hashes, offsets


class PageFiller:
    """Rebuilds pages files from runs of pages in the packs of `packs_dir`, for `archive.unpack`."""

    def __init__(self, packs_dir: Path, cache: PageCache | None = None, cached: AbstractSet[str] = frozenset()) -> None:
        self.packs_dir = packs_dir
        self.cache = cache  # uncompressed copies of the packs in `cached`, made on first use
        self.cached = cached
        self._readers: dict[str, _PackReader] = {}

    def fill(self, target: Path, runs: Any, what: str) -> tuple[int, str]:
        """Write the pages `runs` name to the new file `target`; return its size and digest (sha256 of
        its pages' hashes, as `PoolWrite.add_file` lists it)."""
        if not isinstance(runs, list):
            raise CheckpointStoreError(f"{what} is corrupt: page runs of {target.name} are not a list")
        listed = hashlib.sha256()
        size = 0
        with create_new(target) as out:
            for run in runs:
                if not (isinstance(run, list) and len(run) == 3 and isinstance(run[0], str)
                        and PACK_ID.fullmatch(run[0]) and all(type(n) is int and n >= 0 for n in run[1:])):
                    raise CheckpointStoreError(f"{what} is corrupt: bad page run {run!r} in {target.name}")
                reader = self._reader(run[0], what)
                copy = self._copy(reader, what) if run[0] in self.cached else None
                if copy is not None:
                    listed.update(reader.hashes(run[1], run[2], what))
                    out.flush()
                    copy_pages(copy, out.fileno(), run[1], run[2])
                    size += run[2] * PAGE
                    continue
                for data, hashes in reader.pages(run[1], run[2], what):
                    # The pack's own hashes, not the pages hashed again: its index is checksummed and
                    # each frame carries zstd's checksum of exactly the pages hashed when it was written.
                    listed.update(hashes)
                    out.write(data)
                    size += len(data)
        return size, listed.hexdigest()

    def kept_pages(self, pack: str, first: int, count: int) -> tuple[int, bytes] | None:
        """Where pages `first` to `first + count` of `pack` are in memory (mapped from its uncompressed
        copy, for `memcmp`), and their hashes; None where there is no such copy or no such pages (for
        `basepages`, for which this is only a hint)."""
        try:
            reader = self._reader(pack, "kept pages")
            copy = self._copy(reader, "kept pages")
            hashes = reader.hashes(first, count, "kept pages")
        except CheckpointStoreError:
            return None
        if copy is None or self.cache is None:
            return None
        return self.cache.address(pack, copy) + first * PAGE, hashes

    def _copy(self, reader: _PackReader, what: str) -> int | None:
        if self.cache is None:
            return None
        count = reader.count(what)
        return self.cache.open(reader.pack, count, lambda: (data for data, _ in reader.pages(0, count, what)),
                               lambda: reader.hashes(0, count, what))

    def _reader(self, pack: str, what: str) -> _PackReader:
        if pack not in self._readers:
            try:
                f = (self.packs_dir / f"{pack}.pack").open("rb")
            except FileNotFoundError:
                raise CheckpointStoreError(f"{what} is corrupt or truncated: its page pack {pack} is missing "
                                           f"from {self.packs_dir}") from None
            self._readers[pack] = _PackReader(f, pack)
        return self._readers[pack]

    def close(self) -> None:
        for reader in self._readers.values():
            reader.file.close()
        if self.cache is not None:
            self.cache.close()


class _PackReader:
    def __init__(self, file: IO[bytes], pack: str) -> None:
        self.file = file
        self.pack = pack
        self._offsets: list[int] | None = None
        self._count = 0
        self._hashes = b""
        self._block = -1
        self._data = b""
        self._decompressor = zstandard.ZstdDecompressor()

    def count(self, what: str) -> int:
        """How many pages the pack holds (reads its index the first time)."""
        if self._offsets is None:
            try:
                hashes, self._offsets = read_index(self.file)
            except CheckpointStoreError as exc:
                raise CheckpointStoreError(f"{what} is corrupt or truncated: page pack {self.pack}: {exc}") from None
            self._count = len(hashes)
            self._hashes = b"".join(hashes)
        return self._count

    def hashes(self, first: int, count: int, what: str) -> bytes:
        """The hashes of pages `first` to `first + count`, joined."""
        if count == 0 or first + count > self.count(what):
            raise CheckpointStoreError(f"{what} is corrupt: pages {first}+{count} are not in page pack {self.pack} "
                                       f"({self._count} pages)")
        return self._hashes[first * HASH_BYTES:(first + count) * HASH_BYTES]

    def pages(self, first: int, count: int, what: str) -> Iterator[tuple[bytes, bytes]]:
        """Pages `first` to `first + count` in pieces: each piece's bytes and its pages' hashes, joined."""
        self.hashes(first, count, what)  # checks the range
        number = first
        while number < first + count:
            block, start = divmod(number, BLOCK_PAGES)
            data = self._load(block, what)
            take = min(first + count - number, BLOCK_PAGES - start)
            yield (data[start * PAGE:(start + take) * PAGE],
                   self._hashes[number * HASH_BYTES:(number + take) * HASH_BYTES])
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
