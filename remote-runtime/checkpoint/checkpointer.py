"""Checkpointing a waiting task process into the checkpoint store, and restoring it from there.

The supervisor decides when; this module does the file work: dump with CRIU into a scratch
directory, pack it into the store, and the reverse, plus the resume file that tells a restored
process where its (possibly new) supervisor listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from outlast._channel import RESUME_FILE

from ..settings import RuntimeSettings, env_whole_number
from ..worker.processes import OUTPUT_FILE, process_home
from . import criu
from .store import CheckpointStore, LocalCheckpointStore, S3CheckpointStore, open_store

log = logging.getLogger("outlast.checkpoint")
STORE_TRIES = int(os.environ.get("OUTLAST_CHECKPOINT_STORE_TRIES", "3"))  # puts of one image before giving up
STORE_RETRY_SECONDS = 0.5  # times the try number, between tries
MIN_FREE_BYTES = int(os.environ.get("OUTLAST_CHECKPOINT_MIN_FREE_MB", "256")) * 1_000_000
STORE_FAILURES_TO_STOP = 3  # images in a row the store refused: this node stops checkpointing for a while
STORE_PAUSE_SECONDS = 300.0  # how long, before it tries the store again


def criu_concurrency() -> int:
    """How many criu dumps and restores a node runs at once: OUTLAST_CHECKPOINT_CONCURRENCY, else one per
    CPU. Each criu is CPU-bound (it copies every page through a pipe) and writes its image at disk speed;
    more at once than CPUs only makes each one slower."""
    return env_whole_number("OUTLAST_CHECKPOINT_CONCURRENCY", max(1, os.cpu_count() or 1), minimum=1)


@dataclasses.dataclass(frozen=True)
class DumpedImage:
    """A CRIU image in scratch, not needed once it is durable in the store. While its supervisor works
    on it, `lock` holds an flock on `<image>.lock`: a supervisor that starts finishes those whose lock
    is free (their supervisor died), as `<image>.json` (written by `mark_pending`) says."""

    path: Path
    seconds: float
    lock: int | None = None

    @property
    def pending_file(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def lock_file(self) -> Path:
        return self.path.with_suffix(".lock")


def _locked(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on `path`; None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release_freed_memory() -> None:
    """Give the memory a store put or fetch freed back to the OS (glibc's `malloc_trim`; elsewhere a no-op).

    A put hashes, compresses and indexes the image's pages through buffers of hundreds of KB, in an
    executor thread whose malloc arena glibc keeps at its largest once they are freed. Nothing stays
    in use, yet the runtime's RSS grew by 13-50 KB per checkpoint (measured: 100 -> 200 waiting runs
    added 13 MB of free arena and under 1 MB in use), which 10,000 waiting runs cannot afford.
    """
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


_LIBC = ctypes.CDLL(None)  # this process's C library (its malloc)


def _free_bytes(place: Path) -> int | None:
    try:
        stat = os.statvfs(place)
    except FileNotFoundError:
        return None
    return stat.f_bavail * stat.f_frsize


class Checkpointer:
    def __init__(self, store: CheckpointStore, scratch_dir: Path, process_dir: Path,
                 concurrency: int | None = None) -> None:
        self.store = store
        self.scratch_dir = scratch_dir
        self.process_dir = process_dir
        # Dumps and restores run side by side, up to `concurrency` at once. (They once collided: criu's
        # parasite mounts /proc at `proc.crtools` in the dumped process's cwd; task processes now sit
        # in their own directory while dumped, see outlast._channel.)
        self.concurrency = concurrency or criu_concurrency()
        self._criu_turns = threading.BoundedSemaphore(self.concurrency)

    @classmethod
    async def detect(cls, settings: RuntimeSettings, store: CheckpointStore | None = None,
                     ) -> tuple[Checkpointer | None, str]:
        """A checkpointer if CRIU works on this host (and is not switched off), else None and why not."""
        if settings.checkpoints == "off":
            return None, "checkpointing is switched off (OUTLAST_CHECKPOINTS=off)"
        status = await asyncio.to_thread(criu.check)
        if not status.available:
            return None, f"CRIU is not usable here: {status.reason}"
        store = store or open_store(settings.checkpoint_store, settings.data_dir)
        if isinstance(store, S3CheckpointStore):  # the local store clears its leftovers on its first write
            threading.Thread(target=_sweep, args=(store,), name="outlast-checkpoint-sweep", daemon=True).start()
        return cls(store, settings.data_dir / "scratch", settings.process_dir), ""

    def describe(self) -> str:
        return self.store.describe()

    def dump(self, pid: int) -> DumpedImage:
        """Dump the (suspended) process tree at host `pid` into scratch; the process is gone after.
        The image stays in scratch until `discard`: `store` may fail and the process be restored from it."""
        images = self.scratch_dir / f"dump-{uuid.uuid4().hex}"
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        lock = _locked(images.with_suffix(".lock"))
        assert lock is not None  # a new name: nobody else holds it
        try:
            with self._criu_turns:
                dumped = criu.dump(pid, images)
        except BaseException:
            self.discard(DumpedImage(images, 0.0, lock))
            raise
        return DumpedImage(images, dumped.seconds, lock)

    def mark_pending(self, image: DumpedImage, pending: dict[str, Any]) -> None:
        """Record what `image` is for, so that a supervisor restarted after a crash can commit it."""
        temporary = image.pending_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(pending))
        temporary.replace(image.pending_file)
        if delay := float(os.environ.get("OUTLAST_TEST_PAUSE_AFTER_DUMP", "0")):  # tests: a crash lands here
            time.sleep(delay)

    def interrupted(self) -> list[tuple[DumpedImage, dict[str, Any]]]:
        """Dumps a supervisor that died left in scratch, with what `mark_pending` recorded for each; those
        it died before marking are deleted (their run gets a fresh attempt)."""
        found = []
        for lock_file in sorted(self.scratch_dir.glob("dump-*.lock")):
            lock = _locked(lock_file)
            if lock is None:
                continue  # a live supervisor's
            image = DumpedImage(lock_file.with_suffix(""), 0.0, lock)
            try:
                found.append((image, json.loads(image.pending_file.read_text())))
            except (OSError, ValueError):
                criu.settle_orphaned_dump(image.path, self.process_dir)  # its criu may still be writing there
                self.discard(image)
        return found

    def store_image(self, image: DumpedImage, key: str, version: str | None = None) -> dict[str, Any]:
        """Put the dumped image into the store under `key`, retried STORE_TRIES times; its detail for the run.
        `version` (the code the process ran) lets the store keep the version's pages for its next runs."""
        try:
            for attempt in range(1, STORE_TRIES + 1):
                try:
                    stored = self.store.put(key, image.path, base=version)
                    break
                except Exception as exc:
                    if attempt == STORE_TRIES:
                        raise
                    log.warning("storing checkpoint %s failed (try %d of %d): %s", key, attempt, STORE_TRIES, exc)
                    time.sleep(STORE_RETRY_SECONDS * attempt)
        finally:
            release_freed_memory()
        return {"checkpoint_ms": round(image.seconds * 1000, 1), "store_ms": round(stored.seconds * 1000, 1),
                "image_bytes": stored.raw_bytes, "stored_bytes": stored.stored_bytes, "store": self.describe(),
                "store_parts_ms": {step: round(seconds * 1000, 1) for step, seconds in stored.parts.items()}}

    def restore_dumped(self, image: DumpedImage, process_id: str, socket_path: Path,
                       cgroup_roots: dict[str, str] | None = None) -> int:
        """Restore a process straight from its image in scratch (its store put failed); returns its host PID."""
        return self._restore_images(image.path, process_id, socket_path, cgroup_roots)

    def discard(self, image: DumpedImage) -> None:
        shutil.rmtree(image.path, ignore_errors=True)
        image.pending_file.unlink(missing_ok=True)
        image.lock_file.unlink(missing_ok=True)
        if image.lock is not None:
            os.close(image.lock)

    def space_problem(self) -> str:
        """Why a dump should not start now (scratch or a local store nearly full), or ""."""
        places = [self.scratch_dir]
        if isinstance(self.store, LocalCheckpointStore):
            places.append(self.store.root)
        for place in places:
            free = _free_bytes(place)
            if free is not None and free < MIN_FREE_BYTES:
                return f"only {free / 1e6:.0f} MB free at {place} (a checkpoint needs {MIN_FREE_BYTES / 1e6:.0f} MB)"
        return ""

    def write_resume_file(self, process_id: str, socket_path: Path) -> None:
        home = process_home(self.process_dir, process_id)
        home.mkdir(parents=True, exist_ok=True)
        temporary = home / f".{RESUME_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps({"socket": str(socket_path), "written_at": time.time()}))
        temporary.replace(home / RESUME_FILE)

    def restore(self, key: str, process_id: str, socket_path: Path, cgroup_roots: dict[str, str] | None = None) -> int:
        """Fetch the image and restore it (frozen in sigwait until told to resume) into the cgroups of
        `cgroup_roots` if given (see criu.restore); returns its host PID."""
        images = self.scratch_dir / f"restore-{uuid.uuid4().hex}"
        started = time.perf_counter()
        try:
            self.store.get(key, images)
            fetched = time.perf_counter()
            pid = self._restore_images(images, process_id, socket_path, cgroup_roots)
            log.info("checkpoint %s: fetched in %.1f ms, restored by criu in %.1f ms", key,
                     (fetched - started) * 1000, (time.perf_counter() - fetched) * 1000)
            return pid
        finally:
            shutil.rmtree(images, ignore_errors=True)
            release_freed_memory()

    def _restore_images(self, images: Path, process_id: str, socket_path: Path,
                        cgroup_roots: dict[str, str] | None = None) -> int:
        # The process reopens its output file by path: make sure this node has it.
        home = process_home(self.process_dir, process_id)
        home.mkdir(parents=True, exist_ok=True)
        (home / OUTPUT_FILE).touch()
        self.write_resume_file(process_id, socket_path)
        with self._criu_turns:
            return criu.restore(images, pidfile=images / "restored.pid", cgroup_roots=cgroup_roots)

    def delete(self, key: str) -> None:
        try:
            self.store.delete(key)
        except Exception:
            log.exception("could not delete checkpoint %s", key)

    def forget_process(self, process_id: str) -> None:
        shutil.rmtree(process_home(self.process_dir, process_id), ignore_errors=True)


@dataclasses.dataclass
class CheckpointSupport:
    """Whether this node checkpoints waiting processes: its checkpointer, or why waits stay in memory
    here. Learned when a supervisor starts (`detect`); until then neither. A store that refused
    STORE_FAILURES_TO_STOP images in a row stops checkpointing for STORE_PAUSE_SECONDS (restores go on)."""

    checkpointer: Checkpointer | None = None
    detect_problem: str = ""
    store_failures: int = 0
    store_problem: str = ""
    paused_until: float = 0.0
    queued: int = 0  # processes waiting for a criu turn to be dumped (still in memory meanwhile)
    _turns: asyncio.Semaphore | None = None

    async def detect(self, settings: RuntimeSettings) -> None:
        self.checkpointer, self.detect_problem = await Checkpointer.detect(settings)
        if self.checkpointer is not None:
            self._turns = asyncio.Semaphore(self.checkpointer.concurrency)

    @contextlib.asynccontextmanager
    async def criu_turn(self, *, dump: bool = False) -> AsyncIterator[None]:
        """One of the node's `concurrency` criu turns, waited for here rather than in a thread (the event
        loop's few threads stay free for the store and the database). A `dump` waiting counts in `queued`."""
        if self._turns is None:
            yield
            return
        self.queued += dump
        try:
            await self._turns.acquire()
        finally:
            self.queued -= dump
        try:
            yield
        finally:
            self._turns.release()

    @property
    def problem(self) -> str:
        """Why waits stay in memory on this node now ("" while they are checkpointed)."""
        if self.detect_problem or self.checkpointer is None:
            return self.detect_problem
        if self.store_problem and time.monotonic() < self.paused_until:
            return self.store_problem
        return ""

    def store_worked(self) -> None:
        self.store_failures, self.store_problem = 0, ""

    def store_failed(self, error: Exception) -> None:
        self.store_failures += 1
        if self.store_failures >= STORE_FAILURES_TO_STOP:
            assert self.checkpointer is not None
            self.store_problem = (f"the checkpoint store {self.checkpointer.describe()} failed "
                                  f"{self.store_failures} times in a row ({error}); checkpointing paused")
            self.paused_until = time.monotonic() + STORE_PAUSE_SECONDS
            log.warning("waiting runs stay in memory on this node, NOT checkpointed: %s", self.store_problem)


def _sweep(store: S3CheckpointStore) -> None:
    """Once per runtime start: what puts and deletes killed mid-way left in the bucket (see `s3pages`)."""
    try:
        swept = store.sweep()
    except Exception:
        log.exception("could not sweep the leftovers of interrupted checkpoints in %s", store.describe())
        return
    if any(swept.values()):
        log.info("swept the leftovers of interrupted checkpoints in %s: %s", store.describe(), swept)
