"""A task that streams its output as it makes it (an LLM's tokens, here a stand-in), and reports progress."""

from __future__ import annotations

import asyncio

from outlast import metadata, streams, task


async def fake_llm(prompt: str, words: int):
    """Stands in for an LLM client's async stream of tokens."""
    for index in range(words):
        await asyncio.sleep(0.02)
        yield f"{prompt}-{index} "


@task(id="write-story")
async def write_story(payload: dict) -> dict:
    words = int(payload.get("words", 50))
    metadata.set("progress", 0)
    written = await streams.pipe("tokens", fake_llm(payload.get("prompt", "word"), words))
    metadata.set("progress", 100)
    return {"words": written.chunks if written else 0}
