"""Page sharing for the S3 checkpoint store: each distinct page of a version's runs stored once in the bucket.

As in the local store (`pagepool`), a put sorts an image's pages into pages already stored and one
new pack of the rest (`pagebuild`); the archive then lists its pages files as runs of (pack, first
page, count). Packs are immutable objects named by the hash of their bytes, so a node's copy of one
is never stale and a download is checked against its name.

Bucket layout under the store's prefix (".pages" cannot clash with a key: keys have no hidden names):

    <key>.tar.zst                  the image's archive, its manifest of packs (as before)
    .pages/packs/<id>.pack         a pack
    .pages/refs/<id>/<key>         empty: `key` uses the pack (per pack, so "is it used?" is one list)
    .pages/keys/<key>.json         the packs `key` uses (so a delete knows what to release)
    .pages/condemned/<id>          a collection of the pack is under way
    .pages/versions/<hash>.json    a code version's kept pages: its packs and base maps (`basepages`)

Nothing coordinates the nodes but S3's read-after-write consistency, so collection and reuse
meet in a handshake: a put writes its reference to a pack, then checks that the pack is neither
condemned nor gone; a collector condemns the pack, then lists its references and deletes only if
there are none. Whichever writes second sees the other: a pack is never deleted under a reference
written before the check, and a put never relies on a pack it saw condemned (it stores those pages
again). Every step's crash leaves either garbage (a reference, a manifest, a pack nobody names,
a condemnation) or the old state, never an archive naming a missing pack; `sweep` clears garbage
older than a grace period (a put still under way has not written its archive yet).

The node keeps downloaded and written packs in `cache_dir` (with their index, `pageindex`, and
uncompressed copies of version packs, `pagecache`), so puts match pages against them and restores
fetch only the packs they lack.
"""

# long-module: the put, restore, release and sweep halves of one handshake; split, the invariant that
# keeps a referenced pack alive would be stated in two places.

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from ..objects import S3Objects, atomic_write
from .archive import CheckpointStoreError, pack, unpack
from .basepages import Piece, base_pieces
from .pagebuild import PackBuilder, file_id
from .pagecache import PageCache
from .pageindex import PackIndex
from .pagemaps import pages_file_runs
from .pagepacks import PACK_ID, PageFiller, read_index
from .pagepool import BASES_KEPT, poolable

PAGES = ".pages/"
VERSION_PREFIX = "@version/"  # reference holder of a kept version's packs (not a key: keys cannot have "@")
GRACE = datetime.timedelta(hours=1)  # older garbage is a crash's, not a put under way
_RETRIES = 3


class StalePack(Exception):
    """A pack a put meant to reuse is condemned or gone."""

    def __init__(self, pack: str) -> None:
        super().__init__(pack)
        self.pack = pack


class S3Pages:
    """The shared pages of the store whose archives `objects` keeps, with this node's cache in `cache_dir`."""

    def __init__(self, objects: S3Objects, cache_dir: Path) -> None:
        self.objects = objects
        self.client, self.bucket = objects.client, objects.bucket
        self.root = objects.prefix + PAGES
        self.cache_dir = Path(cache_dir)
        self.packs_dir = self.cache_dir / "packs"
        self.copies_dir = self.cache_dir / "copies"
        self.versions_dir = self.cache_dir / "versions"
        self.index = PackIndex(self.cache_dir / "index.sqlite")
        self._mutex = threading.Lock()
        self._synced = False
        self._requests = ThreadPoolExecutor(8, thread_name_prefix="outlast-s3pages")  # boto3 clients are thread-safe

    # -- put, get, delete -------------------------------------------------------------------------

    def put(self, key: str, images_dir: Path, base: str | None, lap: Callable[[str], None]) -> tuple[int, int]:
        """Store the image: return its raw bytes and the bytes this put added to the bucket."""
        with self._locked():
            stale_packs: set[str] = set()
            for attempt in range(_RETRIES):
                try:
                    return self._put(key, images_dir, base, lap, stale_packs)
                except StalePack as stale:  # another node collects it: store those pages again
                    self._forget(stale.pack)
                    stale_packs.add(stale.pack)
                    if attempt == _RETRIES - 1:
                        raise CheckpointStoreError(f"checkpoint {key!r}: page packs kept being collected "
                                                   f"while it was stored ({stale.pack})") from None
        raise AssertionError("unreachable")

    def _put(self, key: str, images_dir: Path, base: str | None, lap: Callable[[str], None],
             stale_packs: set[str]) -> tuple[int, int]:
        version = self._version(base, stale_packs) if base else None
        maps: dict[str, list[Piece]] = version["maps"] if version else {}
        addresses = pages_file_runs(images_dir)
        self.packs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        builder = PackBuilder(self.index, self.packs_dir, self.copies_dir)
        try:
            pooled = {p.relative_to(images_dir).as_posix(): builder.add_file(p, addresses.get(p.name), maps.get(p.name))
                      for p in poolable(images_dir)}
            lap("hash_pages")
            new = builder.commit(content_named=True)
        finally:
            builder.abandon()
        lap("write_new_pages")
        try:
            return self._publish(key, images_dir, base, lap, version, addresses, pooled, new)
        except BaseException:
            if new is not None:  # not known to be in the bucket: later puts must not build on it
                self._forget(new)
            raise

    def _publish(self, key: str, images_dir: Path, base: str | None, lap: Callable[[str], None],
                 version: dict[str, Any] | None, addresses: dict[str, list[tuple[int, int]]],
                 pooled: dict[str, tuple[int, str, list[Any]]], new: str | None) -> tuple[int, int]:
        packs = {run[0] for _, _, runs in pooled.values() for run in runs}
        old = self._packs_of(key)
        # Manifest, then references, then the check, then the pack and archive: see the module docstring.
        # Requests of one step go out side by side: a put waits for about five round trips, not one per pack.
        self._write_json(f"keys/{key}.json", {"key": key, "packs": sorted(old | packs)})
        self._parallel(lambda pack_id: self._put_object(f"refs/{pack_id}/{key}", b""), sorted(packs - old))
        states = dict(zip(sorted(packs), self._parallel(self._state, sorted(packs)), strict=True))
        for pack_id, (condemned, stored) in states.items():
            # Our own new pack may be stored already (the same pages, elsewhere): then it is reused too.
            if condemned or (pack_id != new and not stored):
                raise StalePack(pack_id)
        added = 0
        if new is not None and not states[new][1]:
            added += self._upload(f"packs/{new}.pack", self.packs_dir / f"{new}.pack")
        lap("upload_pages")
        with self.objects.writing(key) as out:  # after the pack: an archive never names a pack not stored yet
            raw = pack(images_dir, out, pooled)
            added += out.tell()
        lap("write_archive")
        if old - packs:  # what the replaced archive used and this one does not
            self._write_json(f"keys/{key}.json", {"key": key, "packs": sorted(packs)})
            self._release(key, old - packs)
        if base and version is None and packs:
            self._keep_version(base, packs, {name: base_pieces(addresses[name], pooled[name][2])
                                             for name in addresses if name in pooled})
        elif new is not None:
            # This run's own pages: the bucket has them, and the node keeps only versions' packs (a
            # cache that grew by every run it ever stored or restored elsewhere would never shrink).
            self._forget(new)
        lap("release")
        return raw, added

    def get(self, key: str, source: IO[bytes], dest_dir: Path, what: str) -> None:
        """Unpack the archive read from `source`, fetching the packs it names that this node lacks.
        Restores run side by side: only fetching a missing pack takes the lock (cached packs never
        change, being named by content, and the pack of a key being restored is not collected)."""
        self.versions_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        kept = {p for path in self._local_versions() for p in json.loads(path.read_bytes())["packs"]}
        filler = PageFiller(self.packs_dir, PageCache(self.copies_dir), kept)

        def fill(target: Path, runs: Any, what: str) -> tuple[int, str]:
            for run in runs if isinstance(runs, list) else []:
                if isinstance(run, list) and run and isinstance(run[0], str) and PACK_ID.fullmatch(run[0]) \
                        and not (self.packs_dir / f"{run[0]}.pack").exists():
                    with self._locked():
                        self._fetch(run[0], what)
            return filler.fill(target, runs, what)

        try:
            unpack(source, dest_dir, what, fill)
        finally:
            filler.close()

    def delete(self, key: str) -> None:
        """After the archive is gone: drop the key's references, collect the packs left unused."""
        with self._locked():
            self._delete(key)

    def _delete(self, key: str) -> None:
        self._release(key, self._packs_of(key))
        self._delete_object(f"keys/{key}.json")

    # -- versions ---------------------------------------------------------------------------------

    def _version(self, version: str, stale_packs: set[str]) -> dict[str, Any] | None:
        """The kept pages of `version` (its packs fetched), None if it has none yet or they are stale."""
        local = self.versions_dir / f"{_name(version)}.json"
        try:
            record = json.loads(local.read_bytes())
        except (FileNotFoundError, ValueError):
            body = self._get_object(f"versions/{_name(version)}.json")
            if body is None:
                return None
            record = json.loads(body)
            self.versions_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            with atomic_write(local, durable=False) as out:  # a cache: the bucket has it
                out.write(body)
        if stale_packs & set(record["packs"]):  # being collected: this put keeps the version anew
            local.unlink(missing_ok=True)
            return None
        try:
            for pack_id in record["packs"]:
                self._fetch(pack_id, f"the kept pages of version {version!r}")
        except CheckpointStoreError:  # collected meanwhile (a version no longer kept): as if none
            local.unlink(missing_ok=True)
            return None
        return record

    def _keep_version(self, version: str, packs: set[str], maps: dict[str, list[Piece]]) -> None:
        holder = VERSION_PREFIX + version
        for pack_id in sorted(packs):
            self._put_object(f"refs/{pack_id}/{holder}", b"")
        record = {"version": version, "packs": sorted(packs), "maps": maps, "created": time.time()}
        self._write_json(f"versions/{_name(version)}.json", record)

    def _local_versions(self) -> list[Path]:
        return sorted(self.versions_dir.glob("*.json")) if self.versions_dir.is_dir() else []

    # -- references and collection ----------------------------------------------------------------

    def _packs_of(self, key: str) -> set[str]:
        body = self._get_object(f"keys/{key}.json")
        if body is None:
            return set()
        try:
            return {str(p) for p in json.loads(body)["packs"] if PACK_ID.fullmatch(str(p))}
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointStoreError(f"page manifest of {key!r} in {self.describe()} is unreadable: {exc}") from exc

    def _state(self, pack_id: str) -> tuple[bool, bool]:
        """After writing our reference: whether the pack is condemned, then (in this order: see the
        module docstring) whether it is stored. Usable if stored and not condemned."""
        return self._exists(f"condemned/{pack_id}"), self._exists(f"packs/{pack_id}.pack")

    def _parallel(self, call: Callable[[str], Any], items: list[str]) -> list[Any]:
        return list(self._requests.map(call, items)) if len(items) > 1 else [call(item) for item in items]

    def _release(self, holder: str, packs: set[str]) -> None:
        for pack_id in sorted(packs):
            self._delete_object(f"refs/{pack_id}/{holder}")
            self.collect(pack_id)

    def collect(self, pack_id: str) -> bool:
        """Delete the pack if nothing references it (condemn, list, delete); True if it went."""
        if self._has_refs(pack_id):
            return False
        self._put_object(f"condemned/{pack_id}", b"")
        if self._has_refs(pack_id):
            self._delete_object(f"condemned/{pack_id}")  # a put referenced it meanwhile
            return False
        self._delete_object(f"packs/{pack_id}.pack")
        self._delete_object(f"condemned/{pack_id}")
        self._forget(pack_id)
        return True

    def _has_refs(self, pack_id: str) -> bool:
        with self._errors("list references of"):
            reply = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.root}refs/{pack_id}/", MaxKeys=1)
        return bool(reply.get("KeyCount", 0))

    def sweep(self, grace: datetime.timedelta = GRACE) -> dict[str, int]:
        """Clear what crashes left behind, older than `grace`: manifests and references of keys without
        an archive, packs nobody references, condemnations; and the versions past the last BASES_KEPT.
        Returns how many of each went."""
        with self._locked():
            cutoff = datetime.datetime.now(datetime.UTC) - grace
            archives = {name for name, _ in self._list(self.objects.prefix, below=False)}
            swept = {"manifests": 0, "references": 0, "packs": 0, "versions": 0}
            kept: set[str] = set()
            records = []
            for name, modified in self._list(self.root + "versions/"):
                body = self._get_object(name.removeprefix(self.root))
                record = json.loads(body) if body else {}
                # Newest first by the writer's clock: S3's modification times are whole seconds.
                records.append((float(record.get("created", modified.timestamp())), name, record))
            for n, (_, name, record) in enumerate(sorted(records, key=lambda item: item[0], reverse=True)):
                holder = VERSION_PREFIX + str(record.get("version", ""))
                if n < BASES_KEPT:
                    kept.add(holder)
                    continue
                self._delete_object(name.removeprefix(self.root))
                (self.versions_dir / Path(name).name).unlink(missing_ok=True)
                self._release(holder, {str(p) for p in record.get("packs", [])})
                swept["versions"] += 1
            for name, modified in self._list(self.root + "keys/"):
                key = name.removeprefix(self.root + "keys/").removesuffix(".json")
                if modified < cutoff and self.objects.object_key(key) not in archives:
                    self._delete(key)
                    swept["manifests"] += 1
            referenced: set[str] = set()
            for name, modified in self._list(self.root + "refs/"):
                pack_id, _, holder = name.removeprefix(self.root + "refs/").partition("/")
                stale = holder not in kept if holder.startswith(VERSION_PREFIX) else \
                    self.objects.object_key(holder) not in archives
                if stale and modified < cutoff:
                    self._delete_object(f"refs/{pack_id}/{holder}")
                    swept["references"] += 1
                else:
                    referenced.add(pack_id)
            for name, modified in self._list(self.root + "packs/") + self._list(self.root + "condemned/"):
                pack_id = Path(name).name.removesuffix(".pack")
                if pack_id not in referenced and modified < cutoff and self.collect(pack_id):
                    swept["packs"] += 1
            return swept

    # -- the node's cache -------------------------------------------------------------------------

    def _fetch(self, pack_id: str, what: str) -> None:
        """Have the pack in the cache, downloaded and checked against its name if missing."""
        path = self.packs_dir / f"{pack_id}.pack"
        if path.exists():
            return
        self.packs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_name(f".{pack_id}.part")
        try:
            with self._errors(f"download page pack {pack_id} of"):
                self.client.download_file(self.bucket, f"{self.root}packs/{pack_id}.pack", str(partial))
        except CheckpointStoreError as exc:
            partial.unlink(missing_ok=True)
            raise CheckpointStoreError(f"{what}: its page pack {pack_id} is missing or unreadable: {exc}") from None
        if file_id(partial) != pack_id:
            partial.unlink()
            raise CheckpointStoreError(f"{what} is corrupt: page pack {pack_id} does not match its name")
        with partial.open("rb") as f:
            hashes, _ = read_index(f)
        os.replace(partial, path)
        self.index.add(pack_id, hashes)

    def _forget(self, pack_id: str) -> None:
        self.index.forget(pack_id)  # before the file, as in the local pool
        PageCache(self.copies_dir).forget(pack_id)
        (self.packs_dir / f"{pack_id}.pack").unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One change to the cache at a time, in this process (mutex) and between processes (flock)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._mutex:
            fd = os.open(self.cache_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not self._synced:  # once per process: packs a crash left unindexed, rows of packs gone
                    self.packs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                    for partial in self.packs_dir.glob(".*.part"):  # downloads a crash cut short
                        partial.unlink(missing_ok=True)
                    self.index.sync(self.packs_dir)
                    self._synced = True
                yield
            finally:
                os.close(fd)

    # -- S3 calls ---------------------------------------------------------------------------------

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.root}"

    def _put_object(self, name: str, body: bytes) -> None:
        with self._errors(f"write {name} in"):
            self.client.put_object(Bucket=self.bucket, Key=self.root + name, Body=body)

    def _write_json(self, name: str, doc: dict[str, Any]) -> None:
        self._put_object(name, json.dumps(doc, separators=(",", ":")).encode())

    def _upload(self, name: str, path: Path) -> int:
        with self._errors(f"upload {name} to"):
            self.client.upload_file(str(path), self.bucket, self.root + name)
        return path.stat().st_size

    def _get_object(self, name: str) -> bytes | None:
        try:
            with self._errors(f"read {name} in"):
                return bytes(self.client.get_object(Bucket=self.bucket, Key=self.root + name)["Body"].read())
        except _Absent:
            return None

    def _exists(self, name: str) -> bool:
        try:
            with self._errors(f"look up {name} in"):
                self.client.head_object(Bucket=self.bucket, Key=self.root + name)
        except _Absent:
            return False
        return True

    def _delete_object(self, name: str) -> None:
        with self._errors(f"delete {name} in"):
            self.client.delete_object(Bucket=self.bucket, Key=self.root + name)

    def _list(self, prefix: str, *, below: bool = True) -> list[tuple[str, datetime.datetime]]:
        """(object key, last modified) under `prefix`; `below=False`: not inside "folders" of it."""
        found: list[tuple[str, datetime.datetime]] = []
        with self._errors(f"list {prefix} in"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                found.extend((item["Key"], item["LastModified"]) for item in page.get("Contents", [])
                             if below or not item["Key"].startswith(self.root))
        return found

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
                raise _Absent(action) from None
            raise CheckpointStoreError(f"could not {action} {self.describe()}: {exc}") from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise CheckpointStoreError(f"could not {action} {self.describe()}: {exc}") from exc


class _Absent(CheckpointStoreError):
    """No such object (callers that expect absence catch it)."""


def _name(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()[:32]

