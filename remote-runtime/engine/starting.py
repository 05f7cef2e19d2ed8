"""Starting claimed runs on PostgreSQL in one statement: ready rows taken, slots counted, runs EXECUTING, events.

A claim used to send four writes after choosing its rows: delete them from the ready queue, add
to their keys' running counters, move the runs to EXECUTING, and insert one timeline event per
run. On PostgreSQL they are one statement of data-modifying CTEs (all four see the same snapshot
and commit together), so a claim costs the choice and this. SQLite runs them one by one
(engine/attempts.py), where a statement is a function call, not a round trip.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import sqlalchemy as sa

from outlast.wire import RunStatus

from ..store.queue import KeyTuple

_START_CLAIMED = sa.text("""
WITH taken AS (
    DELETE FROM run_queue WHERE run_id = ANY(CAST(:ids AS varchar[])) RETURNING run_id
), counted AS (
    UPDATE queue_keys SET running = queue_keys.running + slots.n
    FROM unnest(CAST(:key_envs AS varchar[]), CAST(:key_queues AS varchar[]), CAST(:key_keys AS varchar[]),
                CAST(:key_counts AS integer[])) AS slots(env_id, queue, concurrency_key, n)
    WHERE queue_keys.env_id = slots.env_id AND queue_keys.queue = slots.queue
      AND queue_keys.concurrency_key = slots.concurrency_key
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
_EVENT_DATA = json.dumps({"status": RunStatus.EXECUTING.value})


def start_claimed(c: sa.Connection, chosen: Sequence[sa.Row], slots: Counter[KeyTuple], node_id: str, now: float,
                  lease_expires_at: float) -> list[sa.Row]:
    """Take `chosen` off the ready queue, count `slots` as running, start the runs still QUEUED (new attempts,
    or resumed ones for rows with `resume`) with their timeline events; returns the started runs' rows."""
    keys = list(slots.items())
    return c.execute(_START_CLAIMED, {
        "ids": [r.run_id for r in chosen], "resuming": [r.run_id for r in chosen if r.resume],
        "key_envs": [k[0] for k, _ in keys], "key_queues": [k[1] for k, _ in keys],
        "key_keys": [k[2] for k, _ in keys], "key_counts": [n for _, n in keys],
        "executing": RunStatus.EXECUTING.value, "queued": RunStatus.QUEUED.value, "node": node_id,
        "lease": lease_expires_at, "now": now, "event_data": _EVENT_DATA,
    }).all()
