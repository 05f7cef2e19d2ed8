"""Tasks that stream and change while they run. Used by tests/realtime/."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from outlast import metadata, streams, task, wait

SCRATCH = Path(os.environ.get("OUTLAST_TEST_SCRATCH", tempfile.gettempdir()))


async def _tokens(count: int):
    for index in range(count):
        yield f"token-{index}"
        if index % 100 == 0:
            await asyncio.sleep(0)


@task(id="stream-tokens")
async def stream_tokens(payload: dict) -> dict:
    """Pipes `count` chunks (an async iterator, as an LLM client gives) into the stream "tokens"."""
    written = await streams.pipe("tokens", _tokens(payload.get("count", 1000)))
    return {"chunks": written.chunks if written else 0}


@task(id="stream-sync")
def stream_sync(payload: dict) -> dict:
    """Appends chunks one by one from a plain `def` task, as told, then returns."""
    for index in range(payload.get("count", 10)):
        streams.append(payload.get("name", "lines"), {"n": index})
    return {"done": True}


@task(id="stream-refused")
def stream_refused(payload: dict) -> dict:
    """Appends a chunk over the limit and reports what the SDK raised."""
    try:
        streams.append("big", "x" * payload["size"])
    except streams.StreamLimitError as exc:
        return {"refused": str(exc)}
    return {"refused": None}


@task(id="change-and-wait", checkpoint_after=1)
async def change_and_wait(payload: dict) -> dict:
    """Metadata, a wait long enough to be checkpointed, a stream written on both sides of it."""
    metadata.set("phase", "before")
    await streams.aappend("progress", "before the wait")
    (SCRATCH / f"{payload['marker']}.waiting").write_text("1")
    await wait.for_(seconds=payload.get("seconds", 3))
    await streams.aappend("progress", "after the wait")
    metadata.set("phase", "after")
    return {"ok": True}


@task(id="gated")
async def gated(payload: dict) -> dict:
    """Waits until the test writes its gate file (then ends): the test decides when it finishes."""
    gate = SCRATCH / f"{payload['marker']}.go"
    metadata.set("step", 1)
    while not gate.exists():
        await asyncio.sleep(0.05)
    metadata.set("step", 2)
    return {"gate": True}


@task(id="stream-gated")
async def stream_gated(payload: dict) -> dict:
    """Streams `first` chunks, waits for the test's gate file, then streams `second` more."""
    first, second = payload.get("first", 500), payload.get("second", 500)
    await streams.pipe("tokens", _numbered(0, first))
    gate = SCRATCH / f"{payload['marker']}.go"
    while not gate.exists():
        await asyncio.sleep(0.05)
    await streams.pipe("tokens", _numbered(first, first + second))
    return {"chunks": first + second}


async def _numbered(start: int, stop: int):
    for index in range(start, stop):
        yield f"token-{index}|"
