"""Moving executing runs between nodes: what a drain and a lost node cost.

Two (then three) `outlast runtime` nodes on one PostgreSQL database (a fresh one) and one checkpoint
store directory, each running the tasks of tests/projects/cluster:

- pause per migrated run: runs that tick (write the wall-clock time every 50 ms) while node A drains
  (SIGTERM) and node B restores them; the pause is the largest gap between two ticks, less the tick
  interval: from the moment it was frozen to the moment it ran again elsewhere. Small processes and
  one holding 100 MiB of random bytes.
- drain time: SIGTERM to exit of node A with those runs executing.
- recovery after SIGKILL: node B killed with ticking runs; the time until each run's attempt 2
  started on node C (the lease is 3 s here: the bound is lease + the timer tick).

    python -m bench.migration [--small 4] [--smoke]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import latency_summary
from tests.conftest import PG_ADMIN_URL, _create_pg_database, _drop_pg_database, runtime_process

INTERVAL = 0.05
LEASE = "3"


def _ticks(scratch: Path, run_id: str) -> list[float]:
    path = scratch / f"{run_id}.ticks"
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def measure(small: int, ticks: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="outlast-bench-migration-"))
    name = _create_pg_database()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    env = {"OUTLAST_CHECKPOINT_STORE": str(root / "store"), "OUTLAST_PROCESS_DIR": str(root / "processes"),
           "OUTLAST_CHECKPOINT_MIN_FREE_MB": "0", "OUTLAST_DRAIN_GRACE": "0", "OUTLAST_LEASE_SECONDS": LEASE}
    nodes = []

    def node(node_id: str):
        (root / node_id).mkdir()
        made = runtime_process(root / node_id, url, project="cluster", slots=small + 1, node_id=node_id,
                               extra_env=env)
        made.env["OUTLAST_TEST_SCRATCH"] = str(root)
        nodes.append(made)
        return made.start()

    try:
        node_a = node("node-a")
        client = node_a.client()
        sizes = {client.trigger("ticker", {"ticks": ticks, "interval": INTERVAL}).id: "small" for _ in range(small)}
        sizes[client.trigger("ticker", {"ticks": ticks, "interval": INTERVAL, "ballast_mb": 100}).id] = "100 MiB"
        _wait(lambda: all(len(_ticks(root, r)) >= 3 for r in sizes), 120, "runs ticking on node A")
        node_b = node("node-b")
        began = time.monotonic()
        node_a.stop()
        drain_seconds = time.monotonic() - began
        for run_id in sizes:
            client = node_b.client()
            run = client.poll(run_id, interval=0.2, timeout=300)
            messages = [e.message for e in client.run_events(run_id)]
            if run.attempts != 1 or not any("resumes on node-b" in m for m in messages):
                raise RuntimeError(f"run {run_id} was not moved by checkpoint: {messages}")
        pauses: dict[str, list[float]] = {"small": [], "100 MiB": []}
        for run_id, size in sizes.items():
            stamps = _ticks(root, run_id)
            pauses[size].append(max(b - a for a, b in itertools.pairwise(stamps)) - INTERVAL)

        client = node_b.client()
        lost = [client.trigger("ticker", {"ticks": ticks, "interval": INTERVAL}).id for _ in range(small)]
        _wait(lambda: all(len(_ticks(root, r)) >= 3 for r in lost), 120, "runs ticking on node B")
        client = node("node-c").client()
        killed = time.time()
        node_b.kill()
        recoveries = []
        for run_id in lost:
            _wait(lambda r=run_id: any("attempt 2 started" in e.message for e in client.run_events(r)), 120,
                  "the retry")
            started = next(e for e in client.run_events(run_id) if "attempt 2 started" in e.message)
            recoveries.append(started.time.timestamp() - killed)
        return {"small_runs": small, "pause_small": latency_summary(pauses["small"]),
                "pause_100mib": latency_summary(pauses["100 MiB"]), "drain_seconds": round(drain_seconds, 2),
                "drain_runs": len(sizes), "recovery_after_sigkill": latency_summary(recoveries),
                "lease_seconds": float(LEASE)}
    finally:
        for made in nodes:
            made.close()
        _drop_pg_database(name)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="two small runs, short")
    args = parser.parse_args()
    result = measure(2 if args.smoke else args.small, 400)  # 20 s: node B is up well before
    print(json.dumps(result))


if __name__ == "__main__":
    main()
