"""Matching a checkpoint's pages with its version's kept pages by address, so most are not hashed.

The runs of one code version are forked from one fork server: most of a run's pages sit at the
same addresses as in the version's kept checkpoint (`PoolWrite.keep_base`) and hold the same bytes.
A kept version has a *base map*: for each pages file, pieces `[vaddr, pages, pack, first]` saying
which pooled page held each address (CRIU's pagemap gives the addresses, see `pagemaps`). A put of
the version splits each pages file into segments by that map; a segment whose bytes equal the
kept pages there (compared with the uncompressed copy, `pagecache`) is pooled as it is, with the
hashes the pack already lists; every other page is hashed as before. A match is byte for byte, so
the map is only a hint: a wrong or stale one costs time, never correctness.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from .pagemaps import PAGE

Piece = list[Any]  # [vaddr, pages, pack id, first page]
Segment = tuple[int, tuple[str, int] | None]  # pages, (pack, first page) they may match


def base_pieces(addresses: list[tuple[int, int]], runs: list[list[Any]]) -> list[Piece]:
    """Zip a pages file's address runs with its pool runs (both in file order) into pieces, sorted by
    address."""
    pieces: list[Piece] = []
    address, pool = iter(addresses), iter(runs)
    vaddr, left = next(address, (0, 0))
    pack, first, count = next(pool, ("", 0, 0))
    while left and count:
        take = min(left, count)
        pieces.append([vaddr, take, pack, first])
        vaddr, left, first, count = vaddr + take * PAGE, left - take, first + take, count - take
        if not left:
            vaddr, left = next(address, (0, 0))
        if not count:
            pack, first, count = next(pool, ("", 0, 0))
    return sorted(pieces)


def segments(addresses: list[tuple[int, int]], pieces: list[Piece], most: int) -> Iterator[Segment]:
    """A pages file with these address runs, in order, as segments of at most `most` pages, each with
    the kept pages at its addresses (or None where the base has none)."""
    starts = [piece[0] for piece in pieces]
    for vaddr, pages in addresses:
        while pages:
            i = bisect.bisect_right(starts, vaddr) - 1
            if i >= 0 and vaddr < starts[i] + pieces[i][1] * PAGE:
                offset = (vaddr - starts[i]) // PAGE
                take = min(pages, pieces[i][1] - offset, most)
                yield take, (pieces[i][2], pieces[i][3] + offset)
            else:
                gap = (starts[i + 1] - vaddr) // PAGE if i + 1 < len(starts) else pages
                take = min(pages, max(gap, 1), most)
                yield take, None
            vaddr, pages = vaddr + take * PAGE, pages - take
