"""Checkpointing a waiting task process into the checkpoint store, and restoring it from there.

The supervisor decides when; this module does the file work: dump with CRIU into a scratch
directory, pack it into the store, and the reverse, plus the resume file that tells a restored
process where its (possibly new) supervisor listens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from outlast._channel import RESUME_FILE

from ..settings import RuntimeSettings
from ..worker.processes import OUTPUT_FILE, process_home
from . import criu
from .store import CheckpointStore, open_store

log = logging.getLogger("outlast.checkpoint")


class Checkpointer:
    def __init__(self, store: CheckpointStore, scratch_dir: Path, process_dir: Path) -> None:
        self.store = store
        self.scratch_dir = scratch_dir
        self.process_dir = process_dir
        # One criu at a time: concurrent dumps of processes that are all PID 1 of their namespaces
        # collide in criu's parasite ("Can't create a directory (-17)"), and each is CPU-bound anyway.
        self._criu = threading.Lock()

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
        return cls(store, settings.data_dir / "scratch", settings.process_dir), ""

    def describe(self) -> str:
        return self.store.describe()

    def dump(self, pid: int, key: str, process_id: str) -> dict[str, Any]:
        """Dump the (suspended) process tree at host `pid` and store it under `key`; the process is gone after."""
        images = self.scratch_dir / f"dump-{uuid.uuid4().hex}"
        try:
            with self._criu:
                dumped = criu.dump(pid, images)
            stored = self.store.put(key, images)
        finally:
            shutil.rmtree(images, ignore_errors=True)
        return {"process_id": process_id, "checkpoint_ms": round(dumped.seconds * 1000, 1),
                "store_ms": round(stored.seconds * 1000, 1), "image_bytes": stored.raw_bytes,
                "stored_bytes": stored.stored_bytes, "store": self.describe()}

    def write_resume_file(self, process_id: str, socket_path: Path) -> None:
        home = process_home(self.process_dir, process_id)
        home.mkdir(parents=True, exist_ok=True)
        temporary = home / f".{RESUME_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps({"socket": str(socket_path), "written_at": time.time()}))
        temporary.replace(home / RESUME_FILE)

    def restore(self, key: str, process_id: str, socket_path: Path) -> int:
        """Fetch the image and restore it (frozen in sigwait until told to resume); returns its host PID."""
        images = self.scratch_dir / f"restore-{uuid.uuid4().hex}"
        try:
            self.store.get(key, images)
            # The process reopens its output file by path: make sure this node has it.
            home = process_home(self.process_dir, process_id)
            home.mkdir(parents=True, exist_ok=True)
            (home / OUTPUT_FILE).touch()
            self.write_resume_file(process_id, socket_path)
            with self._criu:
                return criu.restore(images, pidfile=images / "restored.pid")
        finally:
            shutil.rmtree(images, ignore_errors=True)

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
    here. Learned when a supervisor starts (`detect`); until then neither."""

    checkpointer: Checkpointer | None = None
    problem: str = ""

    async def detect(self, settings: RuntimeSettings) -> None:
        self.checkpointer, self.problem = await Checkpointer.detect(settings)
