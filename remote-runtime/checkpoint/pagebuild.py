"""Sorting one checkpoint's pages into those a page pool already holds and a new pack of the rest.

Used by the local page pool (`pagepool`) and the S3 store's page sharing (`s3pages`): each page is
looked up by its hash in the pool's on-disk index (`pageindex`), one query per block of pages; with
a kept version's base map, pages equal to the kept ones at their address are matched by memcmp
and not hashed at all (`basepages`). New pages go into one new pack (`pagepacks.PackWriter`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .archive import CheckpointStoreError
from .basepages import Piece, segments
from .pagecache import MappedFile, PageCache, same
from .pageindex import PackIndex, Place
from .pagepacks import BLOCK_PAGES, HASH_BYTES, PAGE, PackWriter, PageFiller, page_hash

Run = list[Any]  # [pack id, first page, page count]


class PackBuilder:
    """One put's new pack in `packs_dir`, for pages `index` does not know; `cache_dir` holds the
    uncompressed copies of kept packs (`pagecache`). Used under its pool's lock."""

    def __init__(self, index: PackIndex, packs_dir: Path, cache_dir: Path) -> None:
        self.index = index
        self.packs_dir = packs_dir
        self.cache_dir = cache_dir
        self.new_id = uuid.uuid4().hex
        self._pack = PackWriter(packs_dir / f"{self.new_id}.pack")
        self._new_runs: list[Run] = []  # the runs naming the new pack, renamed if it is named by content
        self.new_bytes = 0  # size of the pack written

    def add_file(self, path: Path, addresses: list[tuple[int, int]] | None = None,
                 base: list[Piece] | None = None) -> tuple[int, str, list[Run]]:
        """Pool the pages of `path`; return its size, digest (sha256 of its pages' hashes) and runs of pages.
        With its pages' `addresses` and a kept version's `base` map, pages equal to the kept ones at
        their address are not hashed (see `basepages`)."""
        if addresses and base:
            return self._add_matching(path, addresses, base)
        listed = hashlib.sha256()
        runs: list[Run] = []
        last: Run = ["", -2, 0]
        size = 0
        with path.open("rb") as f:
            while chunk := f.read(BLOCK_PAGES * PAGE):
                size += len(chunk)
                view = memoryview(chunk)
                block = [view[offset:offset + PAGE] for offset in range(0, len(chunk), PAGE)]
                for digest, where in self._places(block):
                    listed.update(digest)
                    last = self._extend(runs, last, where[0], where[1], 1)
        if size % PAGE:
            raise CheckpointStoreError(f"{path}: {size} bytes is not a whole number of pages")
        return size, listed.hexdigest(), runs

    def _add_matching(self, path: Path, addresses: list[tuple[int, int]], base: list[Piece],
                      ) -> tuple[int, str, list[Run]]:
        """`add_file` comparing each segment with the kept pages at its addresses (memcmp of two mapped
        files, no copies), hashing only the pages that differ."""
        listed = hashlib.sha256()
        runs: list[Run] = []
        last: Run = ["", -2, 0]
        kept_packs = PageFiller(self.packs_dir, PageCache(self.cache_dir), {piece[2] for piece in base})
        with path.open("rb") as f, contextlib.closing(kept_packs):
            size = os.fstat(f.fileno()).st_size
            if size % PAGE:
                raise CheckpointStoreError(f"{path}: {size} bytes is not a whole number of pages")
            mapped = MappedFile(f.fileno())
            try:
                position = 0
                for count, candidate in itertools.chain(segments(addresses, base, BLOCK_PAGES),
                                                        itertools.repeat((BLOCK_PAGES, None))):
                    if position >= size:
                        break
                    count = min(count, (size - position) // PAGE)
                    here = mapped.address + position
                    kept = kept_packs.kept_pages(*candidate, count) if candidate else None
                    if kept is not None and same(here, kept[0], count * PAGE):  # as kept: one run, no hashing
                        listed.update(kept[1])
                        last = self._extend(runs, last, candidate[0], candidate[1], count)
                    else:
                        assert mapped.map is not None
                        differ = [i for i in range(count)
                                  if kept is None or not same(here + i * PAGE, kept[0] + i * PAGE, PAGE)]
                        start = position
                        hashed = iter(self._places([memoryview(mapped.map[start + i * PAGE:start + (i + 1) * PAGE])
                                                    for i in differ]))
                        differing = set(differ)
                        for i in range(count):
                            if i in differing:
                                digest, where = next(hashed)
                            else:
                                assert kept is not None and candidate is not None
                                digest, where = kept[1][i * HASH_BYTES:(i + 1) * HASH_BYTES], (candidate[0],
                                                                                              candidate[1] + i)
                            listed.update(digest)
                            last = self._extend(runs, last, where[0], where[1], 1)
                    position += count * PAGE
            finally:
                mapped.close()
        return size, listed.hexdigest(), runs

    def _places(self, block: list[memoryview]) -> Iterator[tuple[bytes, Place]]:
        """Each page's hash and where the pool holds it, adding the pages it does not hold to the new
        pack; one index query for the whole block."""
        digests = [page_hash(page) for page in block]
        known = self.index.lookup(digests)
        for digest, page in zip(digests, block, strict=True):
            yield digest, known.get(digest) or (self.new_id, self._pack.add(digest, page))

    def commit(self, content_named: bool = False) -> str | None:
        """Write the new pages (if any) as a pack, index it and return its id. `content_named`: the
        pack is named by its contents' hash (`pack_id` of its bytes), and the runs handed out so far
        are renamed with it (the S3 store names shared objects by content)."""
        self.new_bytes = self._pack.commit()
        if not self.new_bytes:
            return None
        if content_named:
            named = self.packs_dir / f"{file_id(self._pack.path)}.pack"
            os.replace(self._pack.path, named)
            self.new_id = named.stem
            for run in self._new_runs:
                run[0] = self.new_id
        self.index.add(self.new_id, self._pack.hashes)
        return self.new_id

    def abandon(self) -> None:
        self._pack.abandon()

    def _extend(self, runs: list[Run], last: Run, pack: str, first: int, count: int) -> Run:
        extended = _extend(runs, last, pack, first, count)
        if pack == self.new_id and extended is not last:
            self._new_runs.append(extended)
        return extended


def file_id(path: Path) -> str:
    """A file's content id: its sha256, cut to the 32 hex digits pack ids have."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:32]


def _extend(runs: list[Run], last: Run, pack: str, first: int, count: int) -> Run:
    """Add `count` pages from `first` of `pack` to `runs`, growing the `last` run where they follow it."""
    if last[0] == pack and last[1] + last[2] == first:
        last[2] += count
        return last
    runs.append([pack, first, count])
    return runs[-1]


