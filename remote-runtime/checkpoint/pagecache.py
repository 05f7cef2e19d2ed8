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
import ctypes
import mmap
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
        self._maps: dict[str, MappedFile] = {}

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

    def address(self, pack: str, fd: int) -> int:
        """Where the copy of `pack` (open as `fd`) is mapped into memory, mapped on first use."""
        if pack not in self._maps:
            self._maps[pack] = MappedFile(fd)
        return self._maps[pack].address

    def close(self) -> None:
        for mapped in self._maps.values():
            mapped.close()
        self._maps.clear()
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


class MappedFile:
    """A whole file mapped private (never written: the mapping is writable only because ctypes hands
    out addresses of writable buffers alone), for comparing pages with `same` without copying them."""

    def __init__(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        self.map = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE) if size else None
        self._anchor = ctypes.c_char.from_buffer(self.map) if self.map is not None else None
        self.address = ctypes.addressof(self._anchor) if self._anchor is not None else 0

    def close(self) -> None:
        self._anchor = None  # the buffer export goes before the map can close
        if self.map is not None:
            self.map.close()


_memcmp = ctypes.CDLL(None).memcmp
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_memcmp.restype = ctypes.c_int


def same(a: int, b: int, size: int) -> bool:
    """Whether `size` bytes at addresses `a` and `b` are equal (libc's memcmp: no copies)."""
    return _memcmp(a, b, size) == 0
