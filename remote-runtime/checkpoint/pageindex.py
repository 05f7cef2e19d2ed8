"""Which pages a page pool's packs hold, on disk: a SQLite file next to the packs, not a dict in RAM.

The pool (`pagepool`) looks every new page up by its hash before writing it. Held in memory, that
index cost about 14 KB of the runtime's RAM per waiting run (a dict entry per page of each run's
own pack), 140 MB for 10,000 waiting runs. On disk it costs the runtime nothing per run, and since
every process sharing the pool reads the same file there is nothing to keep in sync between them.

The index is derived data: the packs are the truth. It may lack a pack (a crash between renaming a
pack into place and indexing it: that pack's pages are only not deduplicated against) but must
never name a pack that is gone, so rows go before their pack's file does, and `sync` (run once per
process, under the pool's lock) drops rows of missing packs and indexes unindexed ones. A file that
SQLite cannot open is rebuilt from the packs.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from .archive import CheckpointStoreError
from .pagepacks import PACK_ID, read_index

Place = tuple[str, int]  # (pack id, page number)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (no INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS pages (hash BLOB PRIMARY KEY, pack INTEGER NOT NULL, number INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pages_by_pack ON pages (pack);
"""
_BATCH = 500  # hashes per query: well under SQLite's limit on bound parameters


class PackIndex:
    """The index file at `path`. Not thread-safe: the pool uses it under its lock and mutex."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = self._open()
            except sqlite3.DatabaseError:  # damaged (say, by a machine crash): rebuilt by the next sync
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # WAL with synchronous=NORMAL survives a process crash whole; a power loss may lose the last
            # changes, and then every process starts afresh and syncs before its first change.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def lookup(self, digests: Iterable[bytes]) -> dict[bytes, Place]:
        """Where the packs hold the pages with these hashes (those they hold)."""
        db, found = self._connection(), {}
        wanted = list(dict.fromkeys(digests))
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start:start + _BATCH]
            rows = db.execute("SELECT pages.hash, packs.id, pages.number FROM pages JOIN packs ON packs.no = pages.pack"
                              f" WHERE pages.hash IN ({','.join('?' * len(batch))})", batch)
            found.update((digest, (pack, number)) for digest, pack, number in rows)
        return found

    def add(self, pack: str, hashes: list[bytes]) -> None:
        """Index a pack now in place; a page some pack already holds keeps its first place."""
        db = self._connection()
        with _transaction(db):
            no = db.execute("INSERT INTO packs (id) VALUES (?) ON CONFLICT (id) DO UPDATE SET id = id RETURNING no",
                            (pack,)).fetchone()[0]
            db.executemany("INSERT OR IGNORE INTO pages (hash, pack, number) VALUES (?, ?, ?)",
                           ((digest, no, number) for number, digest in enumerate(hashes)))

    def forget(self, pack: str) -> None:
        """Drop a pack's rows: call before deleting its file. Its pages that another pack also holds are
        then not found until that pack is indexed again (only a missed deduplication)."""
        db = self._connection()
        with _transaction(db):
            row = db.execute("DELETE FROM packs WHERE id = ? RETURNING no", (pack,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM pages WHERE pack = ?", (row[0],))

    def packs(self) -> set[str]:
        return {pack for (pack,) in self._connection().execute("SELECT id FROM packs")}

    def sync(self, packs_dir: Path) -> None:
        """Make the index match the packs in `packs_dir`: forget gone ones, index new ones."""
        on_disk = {p.stem for p in packs_dir.glob("*.pack") if PACK_ID.fullmatch(p.stem)}
        indexed = self.packs()
        for pack in indexed - on_disk:
            self.forget(pack)
        for pack in sorted(on_disk - indexed):
            try:
                with (packs_dir / f"{pack}.pack").open("rb") as f:
                    hashes, _ = read_index(f)
            except (OSError, CheckpointStoreError):
                hashes = []  # a damaged pack: new puts do not build on it
            self.add(pack, hashes)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
