"""An attempt's start and end on PostgreSQL: each one statement over the ready queue, slots, runs and timeline.

A claim used to send four writes after choosing its rows: delete them from the ready queue, add
to their keys' running counters, move the runs to EXECUTING, and insert one timeline event per
run. A report of completions sent three: give the slots back, one update per run, and the events.
On PostgreSQL each is one statement of data-modifying CTEs (all parts see the same snapshot and
commit together), the rows travelling as one array per column (store/multirow.py). SQLite runs the
parts one by one (engine/attempts.py), where a statement is a function call, not a round trip.

The engine decides every value (statuses, messages, the next state of each run); this module only
knows how they are written.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from .multirow import array_params, unnest
from .queue import KeyTuple
from .schema import run_events, runs

# Set on every ended attempt: the run is no longer held by a node. engine/attempts.py's SQLite
# statement (_COMPLETE_ATTEMPT) clears the same columns.
CLEARED = ("node_id", "lease_expires_at")

# Slots of (env_id, queue, concurrency_key) keys as arrays: `:<p>_envs`, `:<p>_queues`, `:<p>_keys`, `:<p>_counts`.
_SLOTS = """unnest(CAST(:{p}_envs AS varchar[]), CAST(:{p}_queues AS varchar[]), CAST(:{p}_keys AS varchar[]),
                CAST(:{p}_counts AS integer[])) AS slots(env_id, queue, concurrency_key, n)
    WHERE queue_keys.env_id = slots.env_id AND queue_keys.queue = slots.queue
      AND queue_keys.concurrency_key = slots.concurrency_key"""

_START_CLAIMED = sa.text(f"""
WITH taken AS (
    DELETE FROM run_queue WHERE run_id = ANY(CAST(:ids AS varchar[])) RETURNING run_id
), counted AS (
    UPDATE queue_keys SET running = queue_keys.running + slots.n
    FROM {_SLOTS.format(p="k")}
    RETURNING 1
), started AS (
    UPDATE runs SET status = :executing,
        attempts = runs.attempts + CASE WHEN runs.id = ANY(CAST(:resuming AS varchar[])) THEN 0 ELSE 1 END,
        node_id = :node, lease_expires_at = :lease, updated_at = :now,
        started_at = coalesce(runs.started_at, :now),
        expires_at = CASE WHEN runs.id = ANY(CAST(:resuming AS varchar[])) THEN runs.expires_at END
    WHERE runs.id = ANY(CAST(:ids AS varchar[])) AND runs.status = :queued
    RETURNING runs.*
), events AS (
    INSERT INTO run_events (run_id, time, kind, attempt, level, message, data)
    SELECT started.id, :now, 'status', started.attempts, NULL,
           'attempt ' || started.attempts
           || CASE WHEN started.id = ANY(CAST(:resuming AS varchar[])) THEN ' resumes on ' ELSE ' started on ' END
           || :node,
           CAST(:event_data AS json)
    FROM started
    RETURNING 1
)
SELECT * FROM started
""")


def _slot_params(slots: Counter[KeyTuple]) -> dict[str, list[Any]]:
    keys = list(slots.items())
    return {"k_envs": [k[0] for k, _ in keys], "k_queues": [k[1] for k, _ in keys],
            "k_keys": [k[2] for k, _ in keys], "k_counts": [n for _, n in keys]}


def start_claimed(c: sa.Connection, chosen: Sequence[sa.Row], slots: Counter[KeyTuple], *, node_id: str, now: float,
                  lease_expires_at: float, queued: str, executing: str) -> list[sa.Row]:
    """Take `chosen` (rows queue.claim chose with take=False) off the ready queue, count `slots` as running,
    and move the runs still `queued` to `executing` on `node_id`: new attempts, or resumed ones for rows
    with `resume`, each with its timeline event. Returns the started runs' rows."""
    return c.execute(_START_CLAIMED, {
        "ids": [r.run_id for r in chosen], "resuming": [r.run_id for r in chosen if r.resume], **_slot_params(slots),
        "executing": executing, "queued": queued, "node": node_id, "lease": lease_expires_at, "now": now,
        "event_data": json.dumps({"status": executing}),
    }).all()


def finish_attempts(c: sa.Connection, updates: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
                    released: Sequence[KeyTuple]) -> None:
    """Apply `updates` (rows of `b_<column>`, `b_id` naming the run; CLEARED columns are set NULL) and insert
    `events` (rows of `run_events`), giving back a concurrency slot for each of `released`."""
    keys = tuple(updates[0])
    columns = tuple(key.removeprefix("b_") for key in keys)
    event_columns = tuple(events[0])
    c.execute(_finish_statement(columns, event_columns), {
        **array_params(runs, columns, updates, "r", keys), **array_params(run_events, event_columns, events, "e"),
        **_slot_params(Counter(released)),
    })


@functools.cache
def _finish_statement(columns: tuple[str, ...], event_columns: tuple[str, ...]) -> sa.TextClause:
    assignments = ", ".join([f'"{name}" = v."{name}"' for name in columns if name != "id"]
                            + [f'"{name}" = NULL' for name in CLEARED])
    names = ", ".join(f'"{name}"' for name in columns)
    event_names = ", ".join(f'"{name}"' for name in event_columns)
    return sa.text(f"""
WITH released AS (
    UPDATE queue_keys SET running = GREATEST(queue_keys.running - slots.n, 0)
    FROM {_SLOTS.format(p="k")}
    RETURNING 1
), ended AS (
    UPDATE runs SET {assignments}
    FROM {unnest(runs, columns, "r")} AS v({names})
    WHERE runs.id = v.id
    RETURNING 1
)
INSERT INTO run_events ({event_names}) SELECT * FROM {unnest(run_events, event_columns, "e")}
""")
