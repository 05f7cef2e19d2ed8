"""Tasks of bench/realtime.py: one that ends at once, one that streams `count` chunks."""

from __future__ import annotations

from outlast import streams, task


@task(id="bench-noop")
def noop(payload: dict) -> dict:
    return {}


async def _chunks(count: int):
    for index in range(count):
        yield f"chunk-{index}"


@task(id="bench-stream")
async def stream(payload: dict) -> dict:
    written = await streams.pipe("tokens", _chunks(payload["count"]))
    return {"chunks": written.chunks if written else 0}
