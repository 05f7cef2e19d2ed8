"""A content-addressed pool of 4 KiB memory pages shared by the checkpoints of one local store.

Task processes forked from one fork server share most of their memory page for page, so the
`pages-*.img` files of their CRIU images are mostly the same pages. Each `put` hashes every page
and writes only the pages the pool does not hold yet, into one new *pack* (see `pagepacks`). A
checkpoint then records its pages files as runs of (pack, first page, count). A pack no key uses
any more is deleted.

Layout under `<store>/.pages/`: `lock` (flock: several runtime processes may share a store),
`index.sqlite` (which pages the packs hold, see `pageindex`), `packs/<32 hex>.pack`, `users/<pack>/<key hash>` (an
empty file per key using the pack) and `keys/<key hash>` (the packs a key uses): a put or delete
touches only its own key's files, however many keys the store holds. Pack files never change once
renamed into place; puts and deletes hold the lock exclusively, gets shared (so no pack they read
disappears meanwhile).

A pooled file's digest in the archive listing is the sha256 of its pages' hashes in order, not of
its bytes: put hashes each page anyway, and get checks every page it writes back against it, so
neither side hashes the data twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path

from ..objects import atomic_write
from .archive import CheckpointStoreError
from .basepages import Piece
from .pagebuild import PackBuilder, Run
from .pagecache import PageCache
from .pageindex import PackIndex
from .pagepacks import PACK_ID, PAGE, PageFiller

BASE_PREFIX = "@version/"  # pool-only keys (no object): the pages kept for a code version, see `keep_base`
BASES_KEPT = int(os.environ.get("OUTLAST_CHECKPOINT_BASES_KEPT", "4"))
_POOLS: weakref.WeakValueDictionary[Path, PagePool] = weakref.WeakValueDictionary()
_POOLS_LOCK = threading.Lock()


def poolable(images_dir: Path) -> list[Path]:
    """The pages files of a CRIU image directory (one with pagemaps) that hold whole pages."""
    if not any(images_dir.glob("pagemap-*.img")):
        return []
    return sorted(p for p in images_dir.glob("pages-*.img")
                  if p.is_file() and not p.is_symlink() and p.stat().st_size % PAGE == 0)


class PagePool:
    """The pool under `root`. Thread-safe; processes sharing `root` coordinate through flock.
    `has_object(key)` says whether the store still holds a key's object (for crash recovery)."""

    def __init__(self, root: Path, has_object: Callable[[str], bool]) -> None:
        self.root = root
        self.packs = root / "packs"
        self.users = root / "users"  # users/<pack>/<key hash>: an empty file per key using the pack
        self.keys = root / "keys"  # keys/<key hash>: {"key", "packs"}: the packs a key uses
        self.bases = root / "bases.json"  # the versions whose pages stay pooled (see `keep_base`), oldest first
        self.cache = root / "cache"  # uncompressed copies of the kept versions' packs (see `pagecache`)
        self.base_maps = root / "base-maps"  # <base key hash>.json: which kept page held each address
        self.has_object = has_object
        self.index = PackIndex(root / "index.sqlite")  # used under the mutex and the lock
        self._mutex = threading.Lock()
        self._reconciled = False

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
        with self._mutex, self._flock(exclusive=True):
            write = PoolWrite(self, reconcile=not self._reconciled)
            self._reconciled = True
            try:
                yield write
            finally:
                write.abandon()

    @contextlib.contextmanager
    def reading(self) -> Iterator[PageFiller]:
        """Shared access for a get: no pack can disappear meanwhile."""
        with self._flock(exclusive=False):
            kept = set().union(*(self.packs_of(base) for base in self.kept_bases()))
            filler = PageFiller(self.packs, PageCache(self.cache), kept)
            try:
                yield filler
            finally:
                filler.close()

    def kept_bases(self) -> list[str]:
        try:
            return [str(key) for key in json.loads(self.bases.read_bytes())]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as exc:
            raise CheckpointStoreError(f"page pool {self.root}: unreadable {self.bases.name}: {exc}") from exc

    def base_map(self, version: str) -> dict[str, list[Piece]]:
        """The kept `version`'s base map (pages file name -> pieces), {} if it has none."""
        key = BASE_PREFIX + version
        try:
            if key not in self.kept_bases():
                return {}
            maps = json.loads((self.base_maps / f"{_key_name(key)}.json").read_bytes())
            return {str(name): list(pieces) for name, pieces in maps.items()}
        except (OSError, ValueError, TypeError, AttributeError, CheckpointStoreError):
            return {}

    def packs_of(self, key: str) -> set[str]:
        """The packs `key`'s record names."""
        try:
            doc = json.loads((self.keys / _key_name(key)).read_bytes())
            return {str(pack) for pack in doc["packs"] if PACK_ID.fullmatch(str(pack))}
        except FileNotFoundError:
            return set()
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointStoreError(f"page pool {self.root}: unreadable record of key {key!r}: {exc}") from exc


class PoolWrite:
    """One put's (or delete's) changes to the pool, made under the exclusive lock. The first write of
    a process reconciles what crashes left behind."""

    def __init__(self, pool: PagePool, *, reconcile: bool) -> None:
        self.pool = pool
        if reconcile:
            self._reconcile()
        self._pack = PackBuilder(pool.index, pool.packs, pool.cache)

    def add_file(self, path: Path, addresses: list[tuple[int, int]] | None = None,
                 base: list[Piece] | None = None) -> tuple[int, str, list[Run]]:
        """Pool the pages of `path` (see `PackBuilder.add_file`)."""
        return self._pack.add_file(path, addresses, base)

    def commit_pack(self) -> str | None:
        """Write the new pages (if any) as a pack; return its id."""
        return self._pack.commit()

    @property
    def new_bytes(self) -> int:
        """Size of the pack this put wrote."""
        return self._pack.new_bytes

    def reference(self, key: str, packs: set[str]) -> set[str]:
        """Add `key` to the users of `packs` (durably); return the packs it was not using before."""
        current = self.pool.packs_of(key)
        added = packs - current
        for pack in sorted(packs):
            # Even for packs the record names: a crash may have lost a shrunk record after its users went.
            if pack in added or not (self.pool.users / pack / _key_name(key)).exists():
                self._add_user(pack, key)
        if added:
            self._record(key, current | packs, durable=True)
        return added

    def keep_base(self, version: str, packs: set[str], maps: dict[str, list[Piece]] | None = None) -> None:
        """Keep `packs` pooled for `version` even once no checkpoint uses them: they hold the pages of a
        checkpoint of the version, most of them its fork server's, shared by every run of it. A run
        that waits alone (its checkpoint deleted on resume before the next one is taken) then stores
        only its own pages, not the whole interpreter again. The last BASES_KEPT versions are kept."""
        key = BASE_PREFIX + version
        bases = self.pool.kept_bases()
        if key in bases or not packs or BASES_KEPT < 1:  # 0: keep none (as before versions were kept)
            return
        self.reference(key, packs)
        if maps:  # a hint (see `basepages`): not fsynced, checked byte for byte when used
            self.pool.base_maps.mkdir(mode=0o700, exist_ok=True)
            with atomic_write(self.pool.base_maps / f"{_key_name(key)}.json", durable=False) as out:
                out.write(json.dumps(maps).encode())
        bases.append(key)
        for old in bases[:-BASES_KEPT]:
            self.release(old)
            (self.pool.base_maps / f"{_key_name(old)}.json").unlink(missing_ok=True)
        with atomic_write(self.pool.bases) as out:
            out.write(json.dumps(bases[-BASES_KEPT:]).encode())

    def release(self, key: str, keep: AbstractSet[str] = frozenset(), only: AbstractSet[str] | None = None) -> None:
        """`key` no longer uses the packs `only` names (default: any), except `keep`; packs left
        without users are deleted."""
        current = self.pool.packs_of(key)
        drop = {pack for pack in current if pack not in keep and (only is None or pack in only)}
        if not drop:
            return
        self._record(key, current - drop, durable=False)
        for pack in sorted(drop):
            self._drop_user(pack, key)

    def abandon(self) -> None:
        self._pack.abandon()

    # -- references: per-key and per-pack files, so a put or delete costs the same with 10 or 10,000 keys --

    def _record(self, key: str, packs: set[str], durable: bool) -> None:
        """Write which packs `key` uses. Growing records must be on disk before the object that needs
        them; a shrunk record lost in a crash only keeps a pack a little longer (see `_reconcile`)."""
        path = self.pool.keys / _key_name(key)
        if packs:
            with atomic_write(path, durable=durable) as out:
                out.write(json.dumps({"key": key, "packs": sorted(packs)}).encode())
        else:
            path.unlink(missing_ok=True)

    def _add_user(self, pack: str, key: str) -> None:
        # Not fsynced: only a machine crash loses it, and then every process starts afresh and rebuilds
        # the user entries from the (durable) key records before its first change (`_reconcile`).
        folder = self.pool.users / pack
        folder.mkdir(exist_ok=True, mode=0o700)
        os.close(os.open(folder / _key_name(key), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))

    def _drop_user(self, pack: str, key: str) -> None:
        folder = self.pool.users / pack
        (folder / _key_name(key)).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError, OSError):
            folder.rmdir()  # fails while other keys use the pack
        if not folder.exists():
            self.pool.index.forget(pack)  # first: the index must never name a pack that is gone
            PageCache(self.pool.cache).forget(pack)
            (self.pool.packs / f"{pack}.pack").unlink(missing_ok=True)

    def _reconcile(self) -> None:
        """Once per process, under the lock: undo what crashes left behind. Looks at every key, so
        not on each put: references of keys whose object is gone (a delete that crashed between
        removing the object and releasing its packs), user entries no key record backs (a put or
        delete that crashed between the two), packs without users (a put that crashed before
        referencing its pack) and temp files. No put is mid-way meanwhile: we hold the lock."""
        pool = self.pool
        records: dict[str, set[str]] = {}
        bases = set(pool.kept_bases())
        for path in pool.keys.iterdir():
            if path.name.startswith("."):
                path.unlink(missing_ok=True)
                continue
            try:
                doc = json.loads(path.read_bytes())
                key, packs = str(doc["key"]), {str(p) for p in doc["packs"]}
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: keep its packs, to be safe
            if key in bases if key.startswith(BASE_PREFIX) else pool.has_object(key):
                records[path.name] = packs
            else:
                path.unlink(missing_ok=True)
        for name, packs in records.items():  # user entries a machine crash lost (they are not fsynced)
            for pack in packs:
                if (pool.packs / f"{pack}.pack").exists():
                    (pool.users / pack).mkdir(exist_ok=True, mode=0o700)
                    (pool.users / pack / name).touch()
        unreadable = {p.name for p in pool.keys.iterdir()} - records.keys()
        for folder in pool.users.iterdir():
            for user in folder.iterdir():
                if user.name not in unreadable and folder.name not in records.get(user.name, ()):
                    user.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
        for path in pool.packs.iterdir():
            if path.name.startswith(".") or not (pool.users / path.stem).is_dir():
                pool.index.forget(path.stem)  # before the file, as in `_drop_user`
                path.unlink(missing_ok=True)
        PageCache(pool.cache).prune({path.stem for path in pool.packs.iterdir()})
        if pool.base_maps.is_dir():
            for path in pool.base_maps.iterdir():
                if path.stem not in {_key_name(key) for key in bases}:
                    path.unlink(missing_ok=True)
        pool.index.sync(pool.packs)


def _key_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]  # keys may be longer than a file name
