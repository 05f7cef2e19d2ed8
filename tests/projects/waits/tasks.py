"""Tasks that wait: for time, for tokens, for child runs. Used by tests/waits/."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from outlast import task, wait

SCRATCH = Path(os.environ.get("OUTLAST_TEST_SCRATCH", tempfile.gettempdir()))


def mark(name: str, text: str) -> None:
    (SCRATCH / name).write_text(text)


@task(id="stateful-wait")
async def stateful_wait(payload: dict) -> dict:
    """Builds local state, waits, and proves every piece of it survived."""
    counter = 0
    big = list(range(payload.get("items", 50_000_000 // 28)))  # ~50 MB of ints by default
    counter += 1
    handle = tempfile.TemporaryFile("w+")  # noqa: SIM115 - an open file, held across the checkpoint
    handle.write("before the wait\n")
    handle.flush()
    local = {"name": payload.get("name", "state"), "nested": [1, 2, {"three": 3}]}
    mark(f"{payload['marker']}.pid", str(os.getpid()))
    mark(f"{payload['marker']}.host-pid", str(_host_pid()))
    before = time.time()
    await wait.for_(seconds=payload.get("seconds", 10))
    counter += 1
    handle.write("after the wait\n")
    handle.seek(0)
    return {
        "counter": counter,
        "items": len(big),
        "sum_ok": big[-1] == len(big) - 1 and big[12345] == 12345,
        "file": handle.read(),
        "local": local,
        "waited": round(time.time() - before, 1),
        "pid": os.getpid(),
    }


def _host_pid() -> int:
    """The PID the host sees (NSpid's first entry); inside a PID namespace os.getpid() is 1."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[1])
    return os.getpid()


@task(id="sync-wait")
def sync_wait(payload: dict) -> dict:
    """A plain `def` task: the same waits, blocking."""
    mark(f"{payload['marker']}.host-pid", str(_host_pid()))
    started = time.time()
    wait.for_(seconds=payload.get("seconds", 8))
    child = double.trigger_and_wait({"value": 21})
    return {"waited": round(time.time() - started, 1), "child": child.unwrap()}


@task(id="short-wait")
async def short_wait(payload: dict) -> float:
    started = time.time()
    await wait.for_(seconds=payload.get("seconds", 1))
    return round(time.time() - started, 2)


@task(id="double")
async def double(payload: dict) -> int:
    if payload.get("fail"):
        raise ValueError(f"refusing {payload['value']}")
    return payload["value"] * 2


@task(id="parent")
async def parent(payload: dict) -> dict:
    one = await double.trigger_and_wait({"value": payload["value"]})
    batch = await double.batch_trigger_and_wait([{"value": 1}, {"value": 2, "fail": True}, {"value": 3}])
    return {
        "one": one.unwrap(),
        "one_ok": one.ok,
        "batch": [(run.ok, run.output, run.error.message if run.error else None) for run in batch],
        "batch_ok": batch.ok,
    }


@task(id="parallel")
async def parallel(payload: dict) -> dict:
    started = time.time()
    first, second, _ = await asyncio.gather(
        double.trigger_and_wait({"value": 5}),
        slow.trigger_and_wait({"seconds": 2}),
        wait.for_(seconds=payload.get("seconds", 8)),
    )
    return {"first": first.unwrap(), "second": second.unwrap(), "waited": round(time.time() - started, 1)}


@task(id="slow")
async def slow(payload: dict) -> str:
    await asyncio.sleep(payload.get("seconds", 1))
    return "slow done"


@task(id="approval")
async def approval(payload: dict) -> dict:
    token = await wait.create_token(timeout=payload.get("timeout", "1h"), tags=["approval"])
    mark(f"{payload['marker']}.token", token.model_dump_json())
    result = await wait.for_token(token)
    return {"ok": result.ok, "data": result.output, "timed_out": result.timed_out}


@task(id="stateful-token")
async def stateful_token(payload: dict) -> dict:
    """Local state across a token wait, for restores on another node."""
    numbers = [n * n for n in range(200_000)]
    counter = 1
    token = await wait.create_token(timeout="1h")
    mark(f"{payload['marker']}.token", token.model_dump_json())
    mark(f"{payload['marker']}.host-pid", str(_host_pid()))
    result = await wait.for_token(token)
    counter += 1
    return {"counter": counter, "sum": sum(numbers), "data": result.output}


@task(id="hold", checkpoint_after=0)
async def hold(payload: dict, ctx) -> str:
    """Waits for a token at once: many of these wait together in the memory test."""
    token = await wait.create_token(timeout="1h")
    mark(f"hold-{ctx.run_id}.token", token.id)
    result = await wait.for_token(token)
    return result.output


@task(id="http-across-wait")
async def http_across_wait(payload: dict) -> list[int]:
    """Holds a keep-alive HTTP connection pool across a checkpoint: it comes back closed, httpx reconnects."""
    import httpx

    statuses = []
    async with httpx.AsyncClient(base_url=payload["url"]) as client:
        statuses.append((await client.get("/api/v1/health")).status_code)
        await wait.for_(seconds=payload.get("seconds", 3))
        statuses.append((await client.get("/api/v1/health")).status_code)
    return statuses


@task(id="wide-batch")
async def wide_batch(payload: dict) -> list[int]:
    results = await double.batch_trigger_and_wait([{"value": n} for n in range(payload["count"])])
    return results.unwrap()
