"""Named streams a task writes (`streams.append("tokens", chunk)`): limits, storage, retention.

Chunks are stored in `run_stream_chunks` and read in commit order like run events (engine/events.py).
Each chunk is stored once per (run, name, attempt, seq): the task counts what it sent, so a call the
task repeats after a checkpoint (its supervisor never answered) adds nothing twice. The stream's
totals in `run_streams` are updated in the same transaction with a guarded UPDATE, so the size limit
holds however many writers race.

Limits (environment variables of the runtime; see docs/realtime.md):
OUTLAST_STREAM_MAX_CHUNK_BYTES (one chunk, JSON-encoded; default 64 KiB),
OUTLAST_STREAM_MAX_BYTES (one stream in all; default 16 MiB),
OUTLAST_STREAM_RETENTION (seconds a stream is kept after its last chunk; default 7 days), swept at most
once a minute by the runtime that serves the stream's writes or reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import sqlalchemy as sa

from outlast.wire import RunStatus, StreamWrite, StreamWritten

from ..errors import EngineError, RunNotFound
from ..store.db import Database
from ..store.schema import run_stream_chunks, run_streams, runs
from .scope import EnvScope

WRITABLE = (RunStatus.EXECUTING.value, RunStatus.WAITING.value)
SWEEP_SECONDS = 60.0


class StreamRefused(EngineError):
    """A chunk or stream over its limit, or a write for a run that does not execute."""

    status_code = 413
    code = "stream_limit"


class StreamClosed(EngineError):
    status_code = 409
    code = "run_not_executing"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(float(value)) if value else default


@dataclasses.dataclass(frozen=True)
class StreamLimits:
    max_chunk_bytes: int = 64 * 1024
    max_stream_bytes: int = 16 * 1024 * 1024
    retention_seconds: float = 7 * 86400

    @classmethod
    def from_env(cls) -> StreamLimits:
        return cls(max_chunk_bytes=_env_int("OUTLAST_STREAM_MAX_CHUNK_BYTES", cls.max_chunk_bytes),
                   max_stream_bytes=_env_int("OUTLAST_STREAM_MAX_BYTES", cls.max_stream_bytes),
                   retention_seconds=float(os.environ.get("OUTLAST_STREAM_RETENTION", "") or cls.retention_seconds))


def encoded_size(chunk: object) -> int:
    return len(json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode())


class Streams:
    def __init__(self, db: Database, limits: StreamLimits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.limits = limits or StreamLimits.from_env()
        self.clock = clock
        self._next_sweep = 0.0

    def append(self, write: StreamWrite, *, env_ids: list[str] | None = None) -> StreamWritten:
        """Store the chunks of one append call, all or none; `env_ids` scopes a remote worker."""
        append, limits = write.append, self.limits
        sizes = [encoded_size(chunk) for chunk in append.chunks]
        for index, size in enumerate(sizes):
            if size > limits.max_chunk_bytes:
                raise StreamRefused(f"stream {append.name!r}: chunk {append.first_seq + index} is {size} bytes; "
                                    f"the limit is {limits.max_chunk_bytes} bytes (OUTLAST_STREAM_MAX_CHUNK_BYTES)",
                                    field="chunks")
        now = self.clock()
        with self.db.begin() as c:
            run = c.execute(sa.select(runs.c.env_id, runs.c.status, runs.c.attempts).where(
                runs.c.id == write.run_id, *([runs.c.env_id.in_(env_ids)] if env_ids is not None else []))).first()
            if run is None:
                raise RunNotFound(f"run {write.run_id!r} not found", field="run_id")
            if run.status not in WRITABLE or run.attempts != write.attempt:
                raise StreamClosed(f"run {write.run_id!r} is {run.status} (attempt {run.attempts}): its attempt "
                                   f"{write.attempt} can no longer write streams", field="run_id")
            key = (run_stream_chunks.c.run_id == write.run_id, run_stream_chunks.c.name == append.name,
                   run_stream_chunks.c.attempt == write.attempt)
            known = set(c.execute(sa.select(run_stream_chunks.c.seq).where(
                *key, run_stream_chunks.c.seq >= append.first_seq,
                run_stream_chunks.c.seq < append.first_seq + len(sizes))).scalars())
            fresh = [(append.first_seq + i, chunk, size)
                     for i, (chunk, size) in enumerate(zip(append.chunks, sizes, strict=True))
                     if append.first_seq + i not in known]
            added = sum(size for _, _, size in fresh)
            totals = self._grow(c, write.run_id, run.env_id, append.name, len(fresh), added, now)
            if fresh:
                c.execute(run_stream_chunks.insert(), [
                    {"run_id": write.run_id, "name": append.name, "attempt": write.attempt, "seq": seq,
                     "data": chunk, "bytes": size, "time": now} for seq, chunk, size in fresh])
        self.sweep_if_due()
        return totals

    def sweep_if_due(self) -> None:
        """Delete expired streams, at most once a minute (called by the writes and reads of streams)."""
        now = self.clock()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            self.expire()

    def _grow(self, c: sa.Connection, run_id: str, env_id: str, name: str, chunks: int, added: int,
              now: float) -> StreamWritten:
        limit = self.limits.max_stream_bytes
        if added > limit:
            raise self._too_large(name, added, limit)
        exists = sa.and_(run_streams.c.run_id == run_id, run_streams.c.name == name)
        row = c.execute(run_streams.update().where(exists, run_streams.c.bytes + added <= limit).values(
            chunks=run_streams.c.chunks + chunks, bytes=run_streams.c.bytes + added, updated_at=now)
            .returning(run_streams.c.chunks, run_streams.c.bytes)).first()
        if row is not None:
            return StreamWritten(chunks=row.chunks, bytes=row.bytes)
        current = c.execute(sa.select(run_streams.c.bytes).where(exists)).scalar()
        if current is not None:
            raise self._too_large(name, current + added, limit)
        c.execute(run_streams.insert().values(run_id=run_id, name=name, env_id=env_id, chunks=chunks, bytes=added,
                                              updated_at=now))
        return StreamWritten(chunks=chunks, bytes=added)

    @staticmethod
    def _too_large(name: str, size: int, limit: int) -> StreamRefused:
        return StreamRefused(f"stream {name!r} would hold {size} bytes; the limit is {limit} bytes per stream "
                             "(OUTLAST_STREAM_MAX_BYTES)", field="chunks")

    def names(self, env_id: str, run_id: str) -> list[sa.Row]:
        """The run's streams with their totals."""
        scope = EnvScope(self.db, env_id)
        with scope.connect() as c:
            return c.execute(scope.select(run_streams).where(run_streams.c.run_id == run_id)
                             .order_by(run_streams.c.name)).all()

    def expire(self, batch: int = 100) -> int:
        """Delete streams whose last chunk is older than the retention; returns how many."""
        cutoff = self.clock() - self.limits.retention_seconds
        with self.db.begin() as c:
            old = c.execute(sa.select(run_streams.c.run_id, run_streams.c.name)
                            .where(run_streams.c.updated_at < cutoff).limit(batch)).all()
            for row in old:
                c.execute(run_stream_chunks.delete().where(run_stream_chunks.c.run_id == row.run_id,
                                                           run_stream_chunks.c.name == row.name))
                c.execute(run_streams.delete().where(run_streams.c.run_id == row.run_id,
                                                     run_streams.c.name == row.name))
        return len(old)
