"""Realtime benchmark: many SSE subscribers on one runtime, and a task's stream to a reader.

    .venv/bin/python bench/realtime.py [--subscribers 1000] [--runs 50] [--chunks 5000] [--store sqlite|postgres]
    .venv/bin/python bench/realtime.py --smoke

- fan-out: `--subscribers` connections subscribe to one tag (`GET /api/v1/runs/subscribe?tag=`), then
  `--runs` runs with that tag are triggered one after another (`--gap` apart). Commit-to-client
  latency is each subscriber's arrival time of a run's first change (QUEUED, written by the trigger's
  transaction) minus the moment the trigger's answer arrived (the commit happened before it, so this
  slightly understates the latency, by at most one local round trip). CPU per subscriber is the
  runtime process's CPU time during the phase divided by subscribers and seconds.
- stream: a task pipes `--chunks` chunks into a stream while one reader follows it; throughput is
  chunks over the time from the trigger to the reader's last chunk.

Subscribers are raw asyncio connections (no HTTP library), so the client side stays cheap. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Service, cpu_seconds, free_port, latency_summary, wait_until

KEY = "ol_dev_bench_realtime_0123456789"
PROJECT = Path(__file__).resolve().parent / "realtime_project"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class Subscriber:
    """One SSE connection; records when it first saw each run."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def follow(self, port: int, path: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        try:
            while line := await reader.readline():
                if line.startswith(b"retry:"):
                    self.connected.set()
                elif line.startswith(b"data: {"):
                    at = time.perf_counter()
                    start = line.find(b'"run_id":"') + 10  # no JSON parse: the client must stay cheap
                    run_id = line[start:line.index(b'"', start)].decode()
                    if run_id not in self.first_seen:
                        self.first_seen[run_id] = at
        finally:
            writer.close()


def start_runtime(work: Path, database_url: str | None, port: int) -> Service:
    args = [sys.executable, "-m", "outlast.cli", "runtime", "--port", str(port), "--slots", "2",
            "--data-dir", str(work / "data"), "--project", str(PROJECT)]
    if database_url:
        args += ["--database-url", database_url]
    env = {**os.environ, "OUTLAST_SECRET_KEY": KEY}
    env.pop("OUTLAST_DATABASE_URL", None)
    service = Service("runtime", args, env, work / "runtime.log", cwd=ROOT).start()
    headers = {"Authorization": f"Bearer {KEY}"}

    def ready() -> bool:
        service.check_alive()
        try:
            return len(httpx.get(f"http://127.0.0.1:{port}/api/v1/tasks", headers=headers, timeout=2).json()) >= 2
        except (httpx.HTTPError, ValueError, TypeError):
            return False
    wait_until(ready, 90)
    return service


async def fan_out(port: int, pid: int, subscribers: int, runs: int, gap: float) -> dict:
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    subs = [Subscriber() for _ in range(subscribers)]
    for index, sub in enumerate(subs):
        sub.task = asyncio.create_task(sub.follow(port, f"/api/v1/runs/subscribe?tag={tag}"))
        if index % 100 == 99:
            await asyncio.sleep(0.05)  # do not flood the listen backlog
    await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in subs)), 120)
    await asyncio.sleep(1.0)
    committed: dict[str, float] = {}
    cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1",
                                 headers={"Authorization": f"Bearer {KEY}"}) as http:
        for _ in range(runs):
            response = await http.post("/tasks/bench-noop/trigger", json={"payload": {}, "options": {"tags": [tag]}})
            committed[response.json()["id"]] = time.perf_counter()
            await asyncio.sleep(gap)
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and not all(len(s.first_seen) >= runs for s in subs):
        await asyncio.sleep(0.05)
    cpu, wall = cpu_seconds(pid) - cpu_before, time.perf_counter() - wall_before
    for sub in subs:
        assert sub.task is not None
        sub.task.cancel()
    await asyncio.gather(*(s.task for s in subs if s.task), return_exceptions=True)
    latencies = [sub.first_seen[run_id] - at for sub in subs for run_id, at in committed.items()
                 if run_id in sub.first_seen]
    missing = subscribers * runs - len(latencies)
    return {"subscribers": subscribers, "runs": runs, "missing": missing, **latency_summary(latencies),
            "runtime_cpu_s": round(cpu, 3), "cpu_ms_per_subscriber_per_s": 1000 * cpu / subscribers / wall,
            "cpu_us_per_delivery": 1e6 * cpu / max(1, len(latencies))}


async def stream(port: int, chunks: int) -> dict:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=httpx.Timeout(60, read=None),
                                 headers={"Authorization": f"Bearer {KEY}"}) as http:
        started = time.perf_counter()
        run_id = (await http.post("/tasks/bench-stream/trigger", json={"payload": {"count": chunks}})).json()["id"]
        received, first = 0, None
        async with http.stream("GET", f"/runs/{run_id}/streams/tokens") as response:
            async for line in response.aiter_lines():
                if line.startswith("event: chunk"):
                    received += 1
                    first = first or time.perf_counter()
                elif line.startswith("event: end"):
                    break
        ended = time.perf_counter()
    return {"chunks": received, "seconds": ended - started, "chunks_per_s": received / (ended - started),
            "first_chunk_ms": 1000 * ((first or ended) - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between triggers")
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs, measures nothing")
    options = parser.parse_args()
    if options.smoke:
        options.subscribers, options.runs, options.gap, options.chunks = 20, 3, 0.05, 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * options.subscribers + 256)), hard))
    database, url = None, None
    if options.store == "postgres":
        import psycopg

        database = f"outlast_bench_rt_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        runtime = start_runtime(Path(work), url, port)
        try:
            result = {"store": options.store,
                      "fan_out": asyncio.run(fan_out(port, runtime.pid, options.subscribers, options.runs,
                                                     options.gap)),
                      "stream": asyncio.run(stream(port, options.chunks))}
        finally:
            runtime.stop()
            if database:
                import psycopg

                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
