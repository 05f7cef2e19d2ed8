"""The realtime hub: one reader per API replica follows the store's events and fans them out.

Subscribers never poll the database themselves while they are live: the hub reads what is new
(once, for all of them) when it is told to look, and routes each message to the subscribers it
concerns. Being told to look is only a hint, the rows are the truth:
- commits of this process (a pool check-in, which comes after the commit) poke the hub at once;
- on PostgreSQL, this process NOTIFYs `outlast_events` after its commits (coalesced, from its own
  connection, so no writer's transaction holds the notify queue's lock), and one LISTEN connection
  per replica pokes the hub for changes made through other replicas;
- a backstop poll every `poll_interval` catches a lost notification or a writer elsewhere;
- rows held back behind a running transaction (engine/events.py) are read again a few ms later.

A subscriber first registers (taking the hub's position), then reads what it missed from its own
cursor up to that position itself, then takes the live messages: nothing is lost between the two,
and what it already has is skipped, so nothing is repeated. One that falls too far behind (a full
queue) goes back to reading for itself from its last cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from outlast._shutdown_signals import call_at_shutdown_signal

from ..engine.events import START, Cursor
from ..engine.feeds import Feeds, Message
from ..engine.scope import EnvScope
from ..store.db import Database
from ..store.notify import PostgresListener

EVENTS_CHANNEL = "outlast_events"
CLOSING = Message(START, "", "", "", "", frozenset())  # queued to every subscriber when the server stops
KEEPALIVE = Message(START, "", "", "", "", frozenset())  # queued to every subscriber every KEEPALIVE_SECONDS
EXPIRED = Message(START, "", "", "", "", frozenset())  # queued to a subscriber when its public token expires
KEEPALIVE_SECONDS = 15.0
QUEUE_LIMIT = 10_000
HELD_BACK_RETRY = 0.005
log = logging.getLogger("outlast.realtime")
T = TypeVar("T")


@dataclasses.dataclass(eq=False)
class Subscriber:
    """What one SSE connection wants: changes of a run, of runs with a tag, or one run's stream."""

    env_id: str
    run_id: str | None = None
    tag: str | None = None
    run_ids: frozenset[str] | None = None  # a batch
    stream: str | None = None  # with run_id: a stream's chunks (and the run's final status, to end)
    queue: asyncio.Queue[Message] = dataclasses.field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    overflowed: bool = False

    def wants(self, message: Message) -> bool:
        if message.env_id != self.env_id:
            return False
        if self.stream is not None:
            return message.run_id == self.run_id and (message.stream == self.stream or message.final)
        if message.stream is not None:
            return False
        if self.run_id is not None:
            return message.run_id == self.run_id
        if self.run_ids is not None:
            return message.run_id in self.run_ids
        return self.tag in message.tags

    def index_keys(self) -> list[tuple[str, str]]:
        """Where the hub files it: by run (a run, a stream, each run of a batch) or by tag."""
        if self.run_id is not None:
            return [("run", self.run_id)]
        if self.run_ids is not None:
            return [("run", run_id) for run_id in self.run_ids]
        return [("tag", self.tag or "")]

    def offer(self, message: Message) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True  # catches up by reading for itself (see realtime.py)


class Hub:
    def __init__(self, db: Database, *, poll_interval: float = 1.0) -> None:
        self.db = db
        self.postgres = not db.is_sqlite
        self.feeds = Feeds(postgres=self.postgres)
        self.poll_interval = poll_interval
        # Its own small pool: the hub's reads neither wait behind nor poke on the engine's connections.
        self.engine = _reader_engine(db)
        self.events_at, self.chunks_at = START, START
        self.subscribers: dict[tuple[str, str], set[Subscriber]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poked: asyncio.Event | None = None
        self._poke_pending = threading.Event()
        self._notify_wanted = threading.Event()
        self._stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._threads: list[threading.Thread] = []
        self._started = asyncio.Lock()
        self.closing = False  # the server shuts down: subscriptions end so that it can

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start on the running loop (idempotent): positions at the store's current end, then follow."""
        async with self._started:
            if self._task is not None:
                return
            self._loop = asyncio.get_running_loop()
            self._poked = asyncio.Event()
            self.events_at, self.chunks_at = await self.read(self.feeds.positions)
            sa.event.listen(self.db.engine, "commit", self._committing)
            sa.event.listen(self.db.engine, "checkin", self._local_commit)
            if self.postgres:
                url = self.db.url.replace("postgresql+psycopg://", "postgresql://")
                listener = PostgresListener(url, self.poke, channel=EVENTS_CHANNEL)
                notifier = threading.Thread(target=self._notify_loop, args=(url,), name="outlast-notify-events",
                                            daemon=True)
                listener.start()
                notifier.start()
                self._threads = [listener, notifier]
            self._task = asyncio.create_task(self._follow())
            self._keepalive_task = asyncio.create_task(self._keepalive())
            # uvicorn waits for open responses before it stops: every subscription ends at the signal,
            # without `end`, so clients reconnect (to another replica, or to this one restarted).
            call_at_shutdown_signal(self.close_subscriptions)

    async def stop(self) -> None:
        if self._task is None:
            return
        sa.event.remove(self.db.engine, "commit", self._committing)
        sa.event.remove(self.db.engine, "checkin", self._local_commit)
        self.close_subscriptions()
        self._stopping.set()
        self._notify_wanted.set()
        for task in (self._task, self._keepalive_task):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = self._keepalive_task = None
        # The LISTEN and NOTIFY threads end within their waits' timeouts; joined off the loop.
        await asyncio.to_thread(self._join_threads)
        self.engine.dispose()

    def _join_threads(self) -> None:
        for thread in self._threads:
            if isinstance(thread, PostgresListener):
                thread.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def close_subscriptions(self) -> None:
        self.closing = True
        for filed in list(self.subscribers.values()):
            for subscriber in list(filed):
                subscriber.overflowed = True  # wakes its loop out of the live phase ...
                with contextlib.suppress(asyncio.QueueFull):
                    subscriber.queue.put_nowait(CLOSING)  # ... now

    # --- being told to look -------------------------------------------------------------------

    def poke(self) -> None:
        """Look now (from any thread); pokes before the hub ran its read coalesce into one."""
        loop, poked = self._loop, self._poked
        if loop is None or poked is None or loop.is_closed() or self._poke_pending.is_set():
            return
        self._poke_pending.set()
        loop.call_soon_threadsafe(poked.set)

    @staticmethod
    def _committing(connection: sa.Connection) -> None:
        connection.info["outlast_committed"] = True  # the pooled connection's info: read at its check-in

    def _local_commit(self, _dbapi_connection: Any, record: Any) -> None:
        """A connection back in the pool after a commit (one that only read pokes no one)."""
        if not record.info.pop("outlast_committed", False):
            return
        self.poke()
        if self.postgres:
            self._notify_wanted.set()

    def _notify_loop(self, url: str) -> None:
        """Tell other replicas to look, after this one's commits, at most every few milliseconds."""
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as connection:
                    while not self._stopping.is_set():
                        self._notify_wanted.wait()
                        self._notify_wanted.clear()
                        if self._stopping.is_set():
                            return
                        connection.execute(f"NOTIFY {EVENTS_CHANNEL}")
                        self._stopping.wait(0.002)
            except psycopg.Error as exc:  # the database went away: the backstop poll covers the gap
                log.warning("NOTIFY connection lost (%s)", exc)
                self._stopping.wait(1.0)

    async def _keepalive(self) -> None:
        """One timer for every subscriber (not one per subscriber and wait: that cost each delivery a
        timer's scheduling and cancelling)."""
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            for filed in list(self.subscribers.values()):
                for subscriber in filed:
                    subscriber.offer(KEEPALIVE)

    # --- following ----------------------------------------------------------------------------

    def scope(self, env_id: str) -> EnvScope:
        """Environment `env_id`'s view of the store, for `read(..., scope=)`."""
        return EnvScope(self.db, env_id)

    async def read(self, work: Callable[[sa.Connection], T], *, scope: EnvScope | None = None) -> T:
        """Run `work(connection)` on the hub's pool in a worker thread; with `scope`, on a guarded connection
        (a subscriber's reads; the hub's own poll reads every environment)."""
        def run() -> T:
            with self.engine.connect() as c, scope.guard(c) if scope is not None else contextlib.nullcontext():
                return work(c)
        return await asyncio.to_thread(run)

    async def _follow(self) -> None:
        assert self._poked is not None
        wait = self.poll_interval
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.poll_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._poked.wait()
            self._poked.clear()
            self._poke_pending.clear()
            if not self.subscribers and loop.time() < next_poll:
                wait = max(0.0, next_poll - loop.time())
                continue  # nobody listens: only the poll moves the positions on, commits cost nothing
            next_poll = loop.time() + self.poll_interval
            try:
                held_back = await self._read_new()
            except Exception:
                log.exception("realtime hub read failed; retrying")
                held_back = False
            wait = HELD_BACK_RETRY if held_back else self.poll_interval

    async def _read_new(self) -> bool:
        held_back = False
        while True:
            events, chunks = await self.read(functools.partial(self.feeds.new, events_at=self.events_at,
                                                               chunks_at=self.chunks_at))
            # Chunks first: a stream's reader that sees its run end must already have its last chunks.
            self._dispatch(chunks.messages)
            self._dispatch(events.messages)
            self.chunks_at = chunks.end or self.chunks_at
            self.events_at = events.end or self.events_at
            held_back = events.held_back or chunks.held_back
            if events.end is None and chunks.end is None:
                return held_back

    def _dispatch(self, messages: list[Message]) -> None:
        subscribers = self.subscribers
        for message in messages:
            found = subscribers.get(("run", message.run_id), set())
            for tag in message.tags:
                found = found | subscribers.get(("tag", tag), set())
            for subscriber in found:
                if subscriber.wants(message):
                    subscriber.offer(message)

    # --- subscribers --------------------------------------------------------------------------

    def register(self, subscriber: Subscriber) -> Cursor:
        """Add a subscriber; it gets every message past the returned position (events or chunks)."""
        subscriber.overflowed = False
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        for key in subscriber.index_keys():
            self.subscribers.setdefault(key, set()).add(subscriber)
        return self.chunks_at if subscriber.stream is not None else self.events_at

    def unregister(self, subscriber: Subscriber) -> None:
        for key in subscriber.index_keys():
            filed = self.subscribers.get(key)
            if filed is not None:
                filed.discard(subscriber)
                if not filed:
                    del self.subscribers[key]


def _reader_engine(db: Database) -> sa.Engine:
    if db.is_sqlite:
        return sa.create_engine(db.url, connect_args={"timeout": 30, "check_same_thread": False})
    return sa.create_engine(db.url, pool_size=4, max_overflow=8, pool_recycle=1800)
