"""Run changes as Server-Sent Events: `GET /api/v1/runs/{id}/subscribe` and `/api/v1/runs/subscribe?tag=`.

Every message's `id` is its cursor; a client that reconnects with `Last-Event-ID` (browsers'
EventSource do it by themselves) gets what came after it, on any replica (api/hub.py).
Authorised by the environment's secret key, or by a public access token that covers the run (or
the tag), as a Bearer header or, for EventSource (which cannot send headers), `?token=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from outlast.wire import API_PREFIX, END_EVENT, MAX_BATCH_SUBSCRIPTION, StreamEnd

from ..access.public_tokens import allows, is_public_token
from ..engine.events import Cursor
from ..engine.feeds import FINAL, Batch, statuses
from ..engine.streams import Streams
from ..errors import RunNotFound
from .checked_input import CheckedRoute, InvalidInput
from .deps import State, Unauthorized, environment
from .hub import CLOSING, EXPIRED, KEEPALIVE, Hub, Subscriber


@contextlib.asynccontextmanager
async def stop_hub(app: FastAPI) -> AsyncIterator[None]:
    """The hub starts on first use; its reader task and its LISTEN/NOTIFY threads end with the runtime (this
    router's lifespan runs inside the runtime's: the hub stops before the store is disposed)."""
    yield
    holder = getattr(app.state, "outlast_realtime", None)
    if holder is not None:
        await holder.hub.stop()


router = APIRouter(prefix=API_PREFIX, route_class=CheckedRoute, tags=["realtime"], lifespan=stop_hub)
DRAIN_RETRY_SECONDS = 0.005
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "Server-Sent Events: `run` (a RunChange; `log` with ?logs=true, `chunk` for a stream), then "
                   "`end` when the subscription has one; each event's id is its cursor",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
# Pages of the app (another origin) read with a public token in the address, never with cookies.
CORS = {"Access-Control-Allow-Origin": "*"}
Token = Annotated[str | None, Query(max_length=4096, description="a public access token (for EventSource)")]
After = Annotated[str | None, Query(max_length=41, description="start after this cursor (Last-Event-ID wins)")]
LastEventId = Annotated[str | None, Header(alias="last-event-id", max_length=41)]


class Realtime:
    """A replica's hub and streams, made on first use (on the serving loop)."""

    def __init__(self, hub: Hub, streams: Streams) -> None:
        self.hub = hub
        self.streams = streams


async def realtime(request: Request) -> Realtime:
    app: FastAPI = request.app
    holder = getattr(app.state, "outlast_realtime", None)
    if holder is None:
        db = app.state.outlast.db
        holder = app.state.outlast_realtime = Realtime(Hub(db), Streams(db))
    await holder.hub.start()
    return holder


# --- who may subscribe ------------------------------------------------------------------------------


async def subscriber_env(request: Request, authorization: str | None, token: str | None, *,
                         run_id: str | None = None, tag: str | None = None,
                         run_ids: Sequence[str] = ()) -> tuple[str, float | None]:
    """The caller's environment, and when its public token expires (None: a secret key)."""
    credential = token or (authorization or "")[7:].strip()
    if not is_public_token(credential):
        if token:
            raise Unauthorized("?token= takes a public access token only; send a secret key as "
                               "'Authorization: Bearer <key>'", field="token")
        return await environment(request, authorization), None
    # Verifying may read the environment's key, and a tag-scoped token the run's tags: off the event loop.
    claims = await run_in_threadpool(request.app.state.public_tokens.verify, credential)
    engine = request.app.state.outlast.engine
    if run_id is not None or run_ids:
        wanted = [run_id] if run_id is not None else list(run_ids)
        checks = [functools.partial(allows, claims, one, functools.partial(_tags, engine, claims["env"], one))
                  for one in wanted]
        covered = await run_in_threadpool(lambda: all(check() for check in checks))
    else:
        covered = tag in claims.get("tags", ())
    if not covered:
        raise Unauthorized(f"this public token does not cover that {'tag' if tag else 'run'}",
                           field="token" if token else "authorization")
    return claims["env"], float(claims["exp"])


def _tags(engine: object, env_id: str, run_id: str) -> list[str]:
    return engine.retrieve(env_id, run_id).tags  # type: ignore[attr-defined]


def start_cursor(last_event_id: str | None, after: str | None) -> Cursor | None:
    text = last_event_id or after
    if not text:
        return None
    try:
        return Cursor.parse(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="last-event-id" if last_event_id else "after") from None


# --- the event stream -------------------------------------------------------------------------------


class Follow:
    """One subscriber's SSE body: catch up from its cursor, then live messages, until its end."""

    def __init__(self, live: Realtime, subscriber: Subscriber, cursor: Cursor,
                 read: Callable[[Cursor, Cursor | None], Awaitable[Batch]], *, ends_with: Sequence[str],
                 expires_at: float | None) -> None:
        """`ends_with`: the runs whose end (all of them) ends the subscription; none: it never ends."""
        self.hub = live.hub
        self.subscriber = subscriber
        self.cursor = cursor
        self._read = read
        self.ends_with = list(ends_with)
        self.expires_at = expires_at  # a public token's expiry: the stream stops there
        self.finished = False

    async def body(self) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        while not self.hub.closing:
            position = self.hub.register(self.subscriber)
            try:
                async for frame in self._catch_up(position):
                    yield frame
                if self.ends_with and await self._all_final():
                    async for frame in self._to_the_end():
                        yield frame
                    return
                async for frame in self._live():
                    yield frame
                if self.finished or self._expired() or self.hub.closing:
                    return
            finally:
                self.hub.unregister(self.subscriber)

    async def _catch_up(self, position: Cursor) -> AsyncIterator[bytes]:
        while self.cursor < position:
            batch = await self._read(self.cursor, position)
            for message in batch.messages:
                self.cursor = message.cursor
                yield message.frame
            if batch.end is None:
                return

    async def _live(self) -> AsyncIterator[bytes]:
        """Live messages; what waits in the queue when it wakes goes out as one write.

        No timeout per wait: the hub queues a keep-alive to everyone every KEEPALIVE_SECONDS, and a token's
        expiry is one timer per subscription (a timer per wait was a good part of each delivery's cost).
        """
        queue = self.subscriber.queue
        expiry = None
        if self.expires_at is not None:
            loop = asyncio.get_running_loop()
            expiry = loop.call_at(loop.time() + max(0.0, self.expires_at - time.time()), self.subscriber.offer,
                                  EXPIRED)
        try:
            while not self.subscriber.overflowed and not self._expired():
                messages = [await queue.get()]
                while not queue.empty():
                    messages.append(queue.get_nowait())
                frames = []
                for message in messages:
                    if message is EXPIRED:  # the loop's timer may fire a little before the wall clock gets there
                        self.expires_at = min(self.expires_at or 0.0, time.time())
                    if message is CLOSING or message is EXPIRED:
                        break
                    if message is KEEPALIVE:
                        if len(messages) == 1:
                            frames.append(b": keepalive\n\n")
                        continue
                    if message.final and self.ends_with and await self._all_final():
                        if frames:
                            yield b"".join(frames)
                        async for frame in self._to_the_end():
                            yield frame
                        self.finished = True
                        return
                    if message.cursor <= self.cursor:
                        continue  # it came in the catch-up already
                    self.cursor = message.cursor
                    frames.append(message.frame)
                if frames:
                    yield b"".join(frames)
        finally:
            if expiry is not None:
                expiry.cancel()

    async def _to_the_end(self) -> AsyncIterator[bytes]:
        """The run is final: what is left of it, then `end`."""
        while True:
            batch = await self._read(self.cursor, None)
            for message in batch.messages:
                self.cursor = message.cursor
                yield message.frame
            if batch.end is None and not batch.held_back:
                break
            if batch.end is None:
                await asyncio.sleep(DRAIN_RETRY_SECONDS)
        env_id = self.subscriber.env_id
        final = await self.hub.read(lambda c: statuses(c, env_id, self.ends_with), scope=self.hub.scope(env_id))
        if len(self.ends_with) == 1:
            end = StreamEnd(run_id=self.ends_with[0], status=final.get(self.ends_with[0]))
        else:
            end = StreamEnd(statuses=final)
        yield f"id: {self.cursor}\nevent: {END_EVENT}\ndata: {end.model_dump_json(exclude_defaults=True)}\n\n".encode()

    async def _all_final(self) -> bool:
        env_id = self.subscriber.env_id
        now = await self.hub.read(lambda c: statuses(c, env_id, self.ends_with), scope=self.hub.scope(env_id))
        return all(now.get(run_id) in FINAL for run_id in self.ends_with)

    def _expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at


def sse(follow: Follow, *, cross_origin: bool = True) -> StreamingResponse:
    headers = {**SSE_HEADERS, **(CORS if cross_origin else {})}
    return StreamingResponse(follow.body(), media_type="text/event-stream", headers=headers)


async def check_runs(live: Realtime, env_id: str, run_ids: Sequence[str], field: str = "run_id") -> None:
    found = await live.hub.read(lambda c: statuses(c, env_id, run_ids), scope=live.hub.scope(env_id))
    for index, run_id in enumerate(run_ids):
        if run_id not in found:
            where = f"{field}.{index}" if field == "batch" else field
            raise RunNotFound(f"run {run_id!r} not found", field=where)


async def run_follow(live: Realtime, env_id: str, run_id: str, cursor: Cursor | None, *, logs: bool,
                     expires_at: float | None = None) -> Follow:
    """A run's changes from `cursor` (None: from its first event)."""
    await check_runs(live, env_id, [run_id])
    feeds = live.hub.feeds

    async def read(after: Cursor, until: Cursor | None) -> Batch:
        return await live.hub.read(lambda c: feeds.changes(c, after, env_id=env_id, run_id=run_id, until=until,
                                                           logs=logs), scope=live.hub.scope(env_id))
    subscriber = Subscriber(env_id=env_id, run_id=run_id)
    return Follow(live, subscriber, cursor or Cursor(0, 0), read, ends_with=[run_id], expires_at=expires_at)


# --- endpoints --------------------------------------------------------------------------------------


# A tag subscription never ends (a batch's, once its runs are final): tests/e2e/test_fuzz.py checks the
# status and type of an accepted one, not its body.
@router.get("/runs/subscribe", response_class=StreamingResponse, responses=SSE_RESPONSES)
async def subscribe_to_runs(request: Request, rt: State,
                            tag: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
                            batch: Annotated[list[str], Query(description="run ids (repeated or comma-separated)")] = [],  # noqa: B006, E501
                            authorization: Annotated[str | None, Header()] = None, token: Token = None,
                            after: After = None, last_event_id: LastEventId = None) -> StreamingResponse:
    """Changes of every run with `tag` from now on (or after the cursor), or of a batch's runs from their
    first (ending once all are final)."""
    run_ids = batch_ids(batch)
    if (tag is None) == (not run_ids):
        raise InvalidInput("give either tag or batch (the run ids of a batch)", field="tag" if tag else "batch")
    if tag is not None:
        env_id, expires_at = await subscriber_env(request, authorization, token, tag=tag)
    else:
        env_id, expires_at = await subscriber_env(request, authorization, token, run_ids=run_ids)
    live = await realtime(request)
    cursor = start_cursor(last_event_id, after)
    feeds = live.hub.feeds
    if run_ids:
        await check_runs(live, env_id, run_ids, field="batch")

    async def read(after_: Cursor, until: Cursor | None) -> Batch:
        return await live.hub.read(lambda c: feeds.changes(c, after_, env_id=env_id, tag=tag,
                                                           run_ids=run_ids or None, until=until, logs=False),
                                   scope=live.hub.scope(env_id))
    if tag is not None:
        subscriber = Subscriber(env_id=env_id, tag=tag)
        if cursor is None:  # from now: the store's end (the hub's position may be a poll behind when idle)
            cursor = (await live.hub.read(feeds.positions))[0]
        follow = Follow(live, subscriber, cursor, read, ends_with=[], expires_at=expires_at)
    else:
        subscriber = Subscriber(env_id=env_id, run_ids=frozenset(run_ids))
        follow = Follow(live, subscriber, cursor or Cursor(0, 0), read, ends_with=run_ids, expires_at=expires_at)
    return sse(follow)


def batch_ids(values: list[str]) -> list[str]:
    ids = list(dict.fromkeys(part.strip() for value in values for part in value.split(",") if part.strip()))
    if len(ids) > MAX_BATCH_SUBSCRIPTION:
        raise InvalidInput(f"batch: at most {MAX_BATCH_SUBSCRIPTION} runs per subscription, got {len(ids)}",
                           field="batch")
    if any(len(run_id) > 64 for run_id in ids):
        raise InvalidInput("batch: a run id is at most 64 characters", field="batch")
    return ids


@router.get("/runs/{run_id}/subscribe", response_class=StreamingResponse, responses=SSE_RESPONSES)
async def subscribe_to_run(request: Request, run_id: str, rt: State,
                           authorization: Annotated[str | None, Header()] = None, token: Token = None,
                           after: After = None, last_event_id: LastEventId = None,
                           logs: bool = False) -> StreamingResponse:
    """The run's changes from its first event (or after the cursor); ends with an `end` event once it is final."""
    env_id, expires_at = await subscriber_env(request, authorization, token, run_id=run_id)
    live = await realtime(request)
    follow = await run_follow(live, env_id, run_id, start_cursor(last_event_id, after), logs=logs,
                              expires_at=expires_at)
    return sse(follow)
