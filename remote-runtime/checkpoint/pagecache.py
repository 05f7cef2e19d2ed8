"""Uncompressed copies of the page packs of kept versions (`PoolWrite.keep_base`), for fast restores.

Every restore of a version's run writes most of the version's pages back (its fork server's), and
decompressing them is most of a restore's fetch. So the first restore that needs a kept version's
pack writes all its pages out once, uncompressed, as `<pack>.pages` under `<pool>/cache/`; later
restores copy runs of pages from there with `copy_file_range`, in the kernel, without decompressing
or copying through Python. A copy is derived data: written to a temp file, fsynced and renamed; it
goes when its pack goes (the pool deletes both) and a copy of the wrong size is rebuilt.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ..objects import AtomicFile

PAGE = 4096


class PageCache:
    """The copies under `root`; `open` hands out read descriptors, closed by `close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[str, int] = {}

    def path(self, pack: str) -> Path:
        return self.root / f"{pack}.pages"

    def open(self, pack: str, pages: int, contents: Callable[[], Iterator[bytes]]) -> int | None:
        """A descriptor of the copy of `pack` (`pages` pages), built from `contents` if missing; None
        if it cannot be built (then the caller decompresses as usual)."""
        if pack in self._open:
            return self._open[pack]
        path = self.path(pack)
        try:
            if not path.exists() or path.stat().st_size != pages * PAGE:
                self.root.mkdir(mode=0o700, exist_ok=True)
                copy = AtomicFile(path)
                try:
                    for data in contents():
                        copy.file.write(data)
                    copy.commit()
                except BaseException:
                    copy.abandon()
                    raise
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        if os.fstat(fd).st_size != pages * PAGE:
            os.close(fd)
            return None
        self._open[pack] = fd
        return fd

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def forget(self, pack: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(pack).unlink()

    def prune(self, packs: set[str]) -> None:
        """Remove the copies (and temp files) of packs not in `packs`."""
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name.startswith(".") or path.stem not in packs:
                path.unlink(missing_ok=True)


def copy_pages(source: int, out: int, first: int, count: int) -> None:
    """Append pages `first` to `first + count` of the copy `source` to `out` (at its file offset)."""
    offset, left = first * PAGE, count * PAGE
    while left:
        copied = os.copy_file_range(source, out, left, offset)
        if copied <= 0:
            raise OSError(f"copy_file_range stopped with {left} bytes left")
        offset, left = offset + copied, left - copied
