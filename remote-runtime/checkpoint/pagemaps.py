"""Reading CRIU's pagemap images: which virtual addresses the pages of a `pages-<id>.img` belong to.

A pagemap image is CRIU's image header (two little-endian u32 magics), then length-prefixed
protobuf messages: a `pagemap_head` (the `pages_id` of its pages file), then one `pagemap_entry`
per run of pages (vaddr, page count, flags). The pages of entries flagged PRESENT and not PARENT
are in the pages file, in entry order. Only what the page pool needs is decoded; anything
unexpected makes `present_runs` return None and the pool hashes every page as before.
"""

from __future__ import annotations

import struct
from pathlib import Path

PAGE = 4096
_IMG_COMMON = 0x54564319
_PAGEMAP = 0x56084025
_PE_PARENT = 1 << 0
_PE_PRESENT = 1 << 2


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(message: bytes) -> dict[int, int]:
    """The varint fields of a protobuf message (the only kind pagemap messages have)."""
    fields, at = {}, 0
    while at < len(message):
        key, at = _varint(message, at)
        if key & 7 != 0:
            raise ValueError(f"field {key >> 3} is not a varint")
        fields[key >> 3], at = _varint(message, at)
    return fields


def present_runs(pagemap: Path) -> tuple[int, list[tuple[int, int]]] | None:
    """(pages_id, [(vaddr, pages), ...]) of the pages in the pages file, in file order; None if the
    image is not one this reader understands."""
    try:
        data = pagemap.read_bytes()
        if len(data) < 8 or struct.unpack_from("<II", data) != (_IMG_COMMON, _PAGEMAP):
            return None
        at, messages = 8, []
        while at < len(data):
            (size,) = struct.unpack_from("<I", data, at)
            messages.append(_fields(data[at + 4:at + 4 + size]))
            at += 4 + size
        head, entries = messages[0], messages[1:]
        runs = []
        for entry in entries:
            flags = entry.get(4, _PE_PRESENT)
            pages = entry.get(5) or entry.get(2, 0)  # criu 4.x writes the count as field 5
            if flags & _PE_PARENT or entry.get(3):
                return None  # pages kept in a parent image: not ours to match
            if flags & _PE_PRESENT and pages:
                runs.append((entry[1], pages))
        return head[1], runs
    except (OSError, ValueError, KeyError, IndexError, struct.error):
        return None


def pages_file_runs(images_dir: Path) -> dict[str, list[tuple[int, int]]]:
    """For each pages file of a CRIU image directory whose pagemap this reader understands and whose
    size matches it: its (vaddr, pages) runs in file order."""
    found = {}
    for pagemap in sorted(images_dir.glob("pagemap-*.img")):
        read = present_runs(pagemap)
        if read is None:
            continue
        pages_id, runs = read
        pages = images_dir / f"pages-{pages_id}.img"
        try:
            if pages.stat().st_size == sum(n for _, n in runs) * PAGE:
                found[pages.name] = runs
        except OSError:
            continue
    return found
