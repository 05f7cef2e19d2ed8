"""Dequeue cost as history grows: claim (and completion) latency on PostgreSQL, with no finished runs in the
store and then with 1,000,000.

Claims read the ready queue (`run_queue`, which holds only runs that are ready) and reach `runs` by
primary key, so finished runs should cost them nothing; this measures it. The engine runs in this
process against fresh databases (no HTTP, no worker: the claim transaction itself), one empty and
one with the history, measured in alternating rounds so that both see the same load of a shared
machine. Each sample is one `claim` of one run, then one report of its completion, one at a time,
on a queue of runs triggered at the start of each round. The history is filled with set-based SQL (`generate_series`),
not through the API: finished runs of several statuses, two timeline events and a tag each, then
`VACUUM ANALYZE` as autovacuum would leave them. Prints a JSON line.

    python -m bench.history [--history 1000000] [--claims 1000] [--rounds 10] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import latency_summary, machine_info
from outlast.runtime.access.environments import Environments
from outlast.runtime.engine import RunEngine
from outlast.runtime.store.db import Database
from outlast.wire import AttemptCompletion, AttemptOutcome, BatchItem, TaskManifest, WorkerReport
from tests.conftest import PG_ADMIN_URL, _create_pg_database, _drop_pg_database

ENV_KEY = "ol_dev_bench_history_key_0123"
STATUSES = ("COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "CANCELED", "CRASHED", "TIMED_OUT", "EXPIRED")

# Finished runs :first..:last of task `work`, created a second apart a year ago; then their events and tags.
FILL = [f"""
INSERT INTO runs (id, env_id, task_id, status, payload, attempts, max_attempts, retry, tags, metadata, queue,
                  priority, execution_ms, created_at, updated_at, started_at, completed_at, output)
SELECT 'run_history' || lpad(g::text, 12, '0'), 'dev', 'work',
       (ARRAY{list(STATUSES)})[1 + g % {len(STATUSES)}], '{{"n": 1}}', 1, 3, '{{}}', '["history"]', '{{}}',
       'task/work', 0, 5, 1.7e9 + g, 1.7e9 + g, 1.7e9 + g, 1.7e9 + g + 0.005, '{{"ok": true}}'
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) g
""", """
INSERT INTO run_events (run_id, time, kind, attempt, level, message, data)
SELECT 'run_history' || lpad(g::text, 12, '0'), 1.7e9 + g + step * 0.005, 'status', step, NULL,
       CASE step WHEN 0 THEN 'queued' ELSE 'attempt 1 ended' END, '{"status": "COMPLETED"}'
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) g, generate_series(0, 1) step
""", """
INSERT INTO run_tags (run_id, tag, env_id)
SELECT 'run_history' || lpad(g::text, 12, '0'), 'history', 'dev'
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) g
"""]
FILL_CHUNK = 100_000  # rows per transaction: the server's memory stays small whatever the history


def measure(engine: RunEngine, claims: int) -> dict[str, list[float]]:
    """Claim and complete `claims` runs one at a time; the seconds of each claim and each report."""
    engine.trigger("dev", [BatchItem(task="work")] * claims)
    claim_seconds, report_seconds = [], []
    for _ in range(claims):
        began = time.perf_counter()
        [assignment] = engine.claim("node-bench", ["dev"], ["work"], 1)
        claimed = time.perf_counter()
        engine.report(WorkerReport(node_id="node-bench", completions=[AttemptCompletion(
            run_id=assignment.context.run_id, attempt=assignment.context.attempt, outcome=AttemptOutcome.OK)]))
        report_seconds.append(time.perf_counter() - claimed)
        claim_seconds.append(claimed - began)
    return {"claim": claim_seconds, "complete": report_seconds}


def fill(db: Database, history: int) -> float:
    """Insert `history` finished runs with set-based SQL; returns the seconds it took (VACUUM ANALYZE included)."""
    began = time.perf_counter()
    for first in range(1, history + 1, FILL_CHUNK):
        params = {"first": first, "last": min(first + FILL_CHUNK - 1, history)}
        with db.engine.begin() as c:
            for statement in FILL:
                c.execute(sa.text(statement), params)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("VACUUM ANALYZE runs, run_events, run_tags")
    return time.perf_counter() - began


def engine_on_fresh_database() -> tuple[str, Database, RunEngine]:
    name = _create_pg_database()
    db = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    db.migrate()
    Environments(db).bootstrap(ENV_KEY)
    engine = RunEngine(db)
    engine.register_tasks(["dev"], "v1", [TaskManifest(id="work")])
    return name, db, engine


def run(history: int, claims: int, rounds: int) -> dict[str, object]:
    """Two databases on one server, one empty and one with `history` finished runs, measured in alternating
    rounds: a shared, busy machine's load drifts over minutes, and both see the same drift."""
    stores = {"empty": engine_on_fresh_database(), "with_history": engine_on_fresh_database()}
    try:
        fill_seconds = fill(stores["with_history"][1], history)
        samples: dict[str, dict[str, list[float]]] = {key: {"claim": [], "complete": []} for key in stores}
        for _, _, engine in stores.values():
            measure(engine, min(claims, 50))  # warm-up: connections, statement caches
        for _ in range(rounds):
            for key, (_, _, engine) in stores.items():
                for step, seconds in measure(engine, max(1, claims // rounds)).items():
                    samples[key][step] += seconds
    finally:
        for name, db, _ in stores.values():
            db.dispose()
            _drop_pg_database(name)
    summary = {key: {step: latency_summary(seconds) for step, seconds in steps.items()}
               for key, steps in samples.items()}
    ratio = summary["with_history"]["claim"]["p50_ms"] / summary["empty"]["claim"]["p50_ms"]
    return {"history": history, "claims": claims, "rounds": rounds, "fill_seconds": round(fill_seconds, 1),
            **summary, "claim_p50_ratio": ratio, "machine": machine_info()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=1_000_000, help="finished runs to fill the store with")
    parser.add_argument("--claims", type=int, default=1000, help="claims measured before and after the fill")
    parser.add_argument("--rounds", type=int, default=10, help="alternations between the two databases")
    parser.add_argument("--smoke", action="store_true", help="1,000 finished runs, 20 claims: checks it works")
    args = parser.parse_args()
    history, claims, rounds = (1000, 20, 2) if args.smoke else (args.history, args.claims, args.rounds)
    print(json.dumps(run(history, claims, rounds)))


if __name__ == "__main__":
    main()
