"""The report buffer: task logs, metadata and attempt completions, sent to the backend in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from outlast.wire import AttemptCompletion, LogRecord, MetadataUpdate, WorkerReport

from ..engine.fencing import StaleAttempts, without_stale
from .backend import WorkerBackend

log = logging.getLogger("outlast.supervisor")
FLUSH_COALESCE_SECONDS = 0.003
FLUSH_INTERVAL_SECONDS = 0.1
RETRY_SECONDS = 0.5


class ReportBuffer:
    def __init__(self, backend: WorkerBackend) -> None:
        self.backend = backend
        self.pending = WorkerReport()
        self._flush_now = asyncio.Event()

    def log(self, record: LogRecord) -> None:
        self.pending.logs.append(record)

    def metadata(self, update: MetadataUpdate) -> None:
        self.pending.metadata.append(update)

    def complete(self, completion: AttemptCompletion, *, now: bool = True) -> None:
        """Queue an attempt's outcome; with `now`, the flush loop sends it without waiting its interval."""
        self.pending.completions.append(completion)
        if now:
            self._flush_now.set()

    async def flush(self) -> None:
        """Send what is pending; on failure keep it (ahead of what comes meanwhile) for the next flush."""
        report, self.pending = self.pending, WorkerReport()
        if not (report.logs or report.metadata or report.completions):
            return
        try:
            await self.backend.report(report)
        except StaleAttempts as refused:  # this node lost those attempts (cut off past its lease): drop them
            log.warning("runtime refused a report: %s", refused.message)
            rest = without_stale(report, refused)
            if len(rest.logs) + len(rest.metadata) + len(rest.completions) == (
                    len(report.logs) + len(report.metadata) + len(report.completions)):
                return  # refused as a whole, naming nothing it holds: sending it again would loop
            self.pending.logs[:0] = rest.logs
            self.pending.metadata[:0] = rest.metadata
            self.pending.completions[:0] = rest.completions
            self._flush_now.set()
        except Exception as exc:
            log.warning("report failed, will retry: %s", exc)
            self.pending.logs[:0] = report.logs
            self.pending.metadata[:0] = report.metadata
            self.pending.completions[:0] = report.completions
            await asyncio.sleep(RETRY_SECONDS)

    async def run(self, busy: Callable[[], bool]) -> None:
        """Flush every FLUSH_INTERVAL_SECONDS, or at once when a completion is queued (a little later while
        attempts run, to gather the completions of several into one report)."""
        while True:
            if busy():
                await asyncio.sleep(FLUSH_COALESCE_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), FLUSH_INTERVAL_SECONDS)
            self._flush_now.clear()
            await self.flush()
