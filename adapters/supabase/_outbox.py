"""The outbox drainer: triggers the tasks of every row change the outbox trigger recorded.

pg_net sends a webhook at most once: if the receiver or the runtime is down at that moment, the
event is gone. With `outlast supabase setup --outbox`, a trigger writes each event into
`outlast.outbox` inside the same transaction as the change, and this drainer takes rows with
`FOR UPDATE SKIP LOCKED` (several drainers never take the same row), triggers their tasks and
deletes the rows in the same transaction. A runtime that is down leaves the rows where they
are; a crash between the trigger and the delete repeats the trigger with the same idempotency
key, which returns the run already started. So every committed change starts its runs once.

    outlast supabase drain --database-url postgresql://... --routes myapp.routes
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from outlast._client import Client, default_client
from outlast._errors import APIError, AuthenticationError, InvalidRequestError, RuntimeUnavailableError
from outlast.wire import MAX_BATCH_ITEMS, BatchItem

from ._events import parse_event
from ._routes import Router, default_router
from ._sql import OUTBOX_CHANNEL

if TYPE_CHECKING:
    import psycopg

__all__ = ["DrainResult", "OutboxDrainer"]

log = logging.getLogger("outlast.adapters.supabase")

_TAKE = """
select id, payload from outlast.outbox where available_at <= now()
order by id limit %s for update skip locked
"""
_DONE = "delete from outlast.outbox where id = any(%s)"
_RETRY_LATER = """
update outlast.outbox set attempts = attempts + 1, last_error = %s,
  available_at = now() + make_interval(secs => least(power(2, attempts), %s))
where id = %s
"""


@dataclass(frozen=True)
class DrainResult:
    """One batch: rows whose runs were triggered, rows no route wanted, rows kept back for a retry."""

    triggered: int = 0
    ignored: int = 0
    deferred: int = 0

    @property
    def rows(self) -> int:
        return self.triggered + self.ignored + self.deferred


class OutboxDrainer:
    """Drains `outlast.outbox` of one database into the runtime; `run()` forever, `drain()` until empty."""

    def __init__(self, database_url: str, router: Router | None = None, *, client: Client | None = None,
                 batch_size: int = 100, poll_interval: float = 1.0, max_backoff: float = 300.0) -> None:
        if not 1 <= batch_size <= MAX_BATCH_ITEMS:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_ITEMS}, got {batch_size}")
        self.database_url = database_url
        self.router = default_router if router is None else router
        self.client = client
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- one batch ---------------------------------------------------------------------------

    def drain_once(self) -> DrainResult:
        """Take up to `batch_size` due rows and trigger their runs.

        Raises `RuntimeUnavailableError` (or `AuthenticationError`) with every row left in place.
        Rows the runtime refuses (a task not deployed yet, a payload its schema rejects) stay too,
        retried with a growing delay, with the reason in `last_error`.
        """
        conn = self._connection()
        client = self.client or default_client()
        with conn.transaction():
            rows = conn.execute(_TAKE, (self.batch_size,)).fetchall()
            planned: dict[int, list[BatchItem]] = {}
            refused: dict[int, str] = {}
            for row_id, payload in rows:
                try:
                    event = parse_event(payload)
                    planned[row_id] = self.router.plan(event)
                except InvalidRequestError as exc:
                    refused[row_id] = str(exc)
                    continue
                if event.qualified_table not in self.router.tables():
                    log.warning("outbox row %s ignored: no route for table %s", row_id, event.qualified_table)
            wanted = {row_id: items for row_id, items in planned.items() if items}
            try:
                self._trigger(client, [item for items in wanted.values() for item in items])
            except (RuntimeUnavailableError, AuthenticationError):
                raise
            except APIError:  # one row spoils the batch: find it, and let the others through
                for row_id, items in list(wanted.items()):
                    try:
                        self._trigger(client, items)
                    except (RuntimeUnavailableError, AuthenticationError):
                        raise
                    except APIError as exc:
                        refused[row_id] = f"{type(exc).__name__}: {exc}"
                        del wanted[row_id]
            done = [row_id for row_id in planned if row_id not in refused]
            if done:
                conn.execute(_DONE, (done,))
            for row_id, reason in refused.items():
                log.warning("outbox row %s kept for a retry: %s", row_id, reason)
                conn.execute(_RETRY_LATER, (reason, self.max_backoff, row_id))
        return DrainResult(triggered=len(wanted), ignored=len(done) - len(wanted), deferred=len(refused))

    @staticmethod
    def _trigger(client: Client, items: list[BatchItem]) -> None:
        for start in range(0, len(items), MAX_BATCH_ITEMS):
            client.batch_trigger(items[start:start + MAX_BATCH_ITEMS])

    def drain(self) -> DrainResult:
        """Batches until no due row is left; the totals."""
        totals = DrainResult()
        while True:
            batch = self.drain_once()
            totals = DrainResult(*(a + b for a, b in zip(_fields(totals), _fields(batch), strict=True)))
            if batch.rows < self.batch_size:
                return totals

    # --- forever -----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Drain, then sleep until the outbox trigger notifies (or `poll_interval` passes); until `stop`.

        While the runtime is down the drainer waits longer each time (up to 30 s) and the rows wait
        in the outbox; the first drain after it is back delivers them all.
        """
        import psycopg

        stop = stop or threading.Event()
        listener: psycopg.Connection | None = None
        delay = self.poll_interval
        while not stop.is_set():
            try:
                if listener is None or listener.closed:
                    listener = psycopg.connect(self.database_url, autocommit=True)
                    listener.execute(f"listen {OUTBOX_CHANNEL}")
                self.drain()
                delay = self.poll_interval
                for _ in listener.notifies(timeout=delay, stop_after=1):
                    pass
            except (RuntimeUnavailableError, AuthenticationError) as exc:
                log.warning("outbox: cannot trigger now, rows stay in the outbox: %s", exc)
                delay = min(delay * 2, 30.0)
                stop.wait(delay)
            except psycopg.OperationalError as exc:
                log.warning("outbox: database connection lost, reconnecting: %s", exc)
                self.close()
                listener = None
                stop.wait(self.poll_interval)
        if listener is not None:
            listener.close()
        self.close()


def _fields(result: DrainResult) -> tuple[Any, ...]:
    return (result.triggered, result.ignored, result.deferred)
