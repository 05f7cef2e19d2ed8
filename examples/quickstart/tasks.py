"""Example tasks: run them with `outlast dev` in this folder, trigger with `outlast trigger`."""

import asyncio
import time

from pydantic import BaseModel

from outlast import logger, metadata, schema_task, task


@task(id="hello-world")
async def hello_world(payload: dict, ctx) -> dict:
    name = payload.get("name", "world")
    logger.info("greeting", name=name, attempt=ctx.attempt)
    metadata.set("progress", 0.5)
    await asyncio.sleep(0.1)
    metadata.set("progress", 1.0)
    return {"message": f"Hello, {name}!", "run": ctx.run_id}


class Resize(BaseModel):
    url: str
    width: int
    height: int = 0


@schema_task(id="resize-image", schema=Resize, retry={"max_attempts": 4, "min_delay": 1, "factor": 2},
             max_duration=600)
def resize_image(payload: Resize, ctx) -> dict:
    print(f"resizing {payload.url} to {payload.width}px")
    for _ in range(3):
        metadata.increment("steps")
        time.sleep(0.05)
    return {"url": payload.url, "width": payload.width, "steps": metadata.get("steps")}
