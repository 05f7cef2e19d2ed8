"""Uncompressed copies of the page packs of kept versions (`PoolWrite.keep_base`), for fast restores.

Every restore of a version's run writes most of the version's pages back (its fork server's), and
decompressing them is most of a restore's fetch. So the first restore that needs a kept version's
pack writes all its pages out once, uncompressed, as `<pack>.pages` under `<pool>/cache/`; later
restores copy runs of pages from there with `copy_file_range`, in the kernel, without decompressing
or copying through Python. A copy is derived data: written to a temp file, fsynced and renamed; it
goes when its pack goes (the pool deletes both) and a copy of the wrong size is rebuilt.

Restores do not hash the pages they copy (that was most of a restore's fetch), so a copy is checked
instead: the first time a process opens one it did not build itself, every page is hashed against
the pack's index (about 15 ms per 30 MB), and a copy that does not match is rebuilt from the pack,
whose zstd frames carry their own checksums. A copy damaged after that check, while the process
runs, is not caught: the store's disk is trusted as far as the database's is.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..objects import AtomicFile

PAGE = 4096
_HASH_BYTES = 16  # as pagepacks names pages: sha256 cut to 16 bytes
_VERIFIED: set[tuple[int, int, int, int]] = set()  # (device, inode, mtime, size) of copies this process checked
_VERIFIED_LOCK = threading.Lock()


class PageCache:
    """The copies under `root`; `open` hands out read descriptors, closed by `close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[str, int] = {}
        self._maps: dict[str, MappedFile] = {}

    def path(self, pack: str) -> Path:
        return self.root / f"{pack}.pages"

    def open(self, pack: str, pages: int, contents: Callable[[], Iterator[bytes]], hashes: Callable[[], bytes],
             ) -> int | None:
        """A descriptor of the copy of `pack` (`pages` pages), built from `contents` if missing, of the
        wrong size or not matching `hashes` (the pack's page hashes, joined); None if it cannot be
        built (then the caller decompresses as usual)."""
        if pack in self._open:
            return self._open[pack]
        path = self.path(pack)
        try:
            fd = self._checked(path, pages, hashes)
            if fd is None:
                self.root.mkdir(mode=0o700, exist_ok=True)
                copy = AtomicFile(path)
                try:
                    for data in contents():  # decompressed from zstd frames whose checksums were checked
                        copy.file.write(data)
                    copy.commit()
                except BaseException:
                    copy.abandon()
                    raise
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                if os.fstat(fd).st_size != pages * PAGE:
                    os.close(fd)
                    return None
                _remember(fd)
        except OSError:
            return None
        self._open[pack] = fd
        return fd

    @staticmethod
    def _checked(path: Path, pages: int, hashes: Callable[[], bytes]) -> int | None:
        """The copy at `path` open, if it has the right size and (checked once per process) pages."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            if st.st_size != pages * PAGE:
                os.close(fd)
                return None
            if _identity(st) in _VERIFIED:
                return fd
            expected = hashes()
            with os.fdopen(os.dup(fd), "rb") as f:
                for number in range(pages):
                    page = f.read(PAGE)
                    if hashlib.sha256(page).digest()[:_HASH_BYTES] != expected[number * _HASH_BYTES:
                                                                              (number + 1) * _HASH_BYTES]:
                        os.close(fd)
                        return None
            _remember(fd)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise

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


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _remember(fd: int) -> None:
    with _VERIFIED_LOCK:
        _VERIFIED.add(_identity(os.fstat(fd)))


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
