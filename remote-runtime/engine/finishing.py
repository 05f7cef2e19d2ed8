"""Ending attempts on PostgreSQL in one statement: slots given back, runs moved on, their timeline events.

The companion of engine/starting.py for completions. `Attempts._complete` decides each run's next
state in Python (rows of `b_<column>` values, as for its `_COMPLETE_ATTEMPT` executemany on SQLite);
here they travel as one array per column, so a report of one completion or of fifty costs one
statement instead of a slot release, one update per run and an event insert.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..store.multirow import array_params, unnest
from ..store.queue import KeyTuple
from ..store.schema import run_events, runs

# Set on every ended attempt, as _COMPLETE_ATTEMPT does: the run is no longer held by a node.
_CLEARED = ("node_id", "lease_expires_at")


def finish_attempts(c: sa.Connection, updates: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
                    released: Sequence[KeyTuple]) -> None:
    """Apply `updates` (rows of `b_<column>`, `b_id` naming the run) and insert `events`, giving back a
    concurrency slot for each of `released`."""
    keys = tuple(updates[0])
    columns = tuple(key.removeprefix("b_") for key in keys)
    event_columns = tuple(events[0])
    slots = list(Counter(released).items())
    c.execute(_statement(columns, event_columns), {
        **array_params(runs, columns, updates, "r", keys), **array_params(run_events, event_columns, events, "e"),
        "k_envs": [k[0] for k, _ in slots], "k_queues": [k[1] for k, _ in slots],
        "k_keys": [k[2] for k, _ in slots], "k_counts": [n for _, n in slots],
    })


@functools.cache
def _statement(columns: tuple[str, ...], event_columns: tuple[str, ...]) -> sa.TextClause:
    assignments = ", ".join([f'"{name}" = v."{name}"' for name in columns if name != "id"]
                            + [f'"{name}" = NULL' for name in _CLEARED])
    names = ", ".join(f'"{name}"' for name in columns)
    event_names = ", ".join(f'"{name}"' for name in event_columns)
    return sa.text(f"""
WITH released AS (
    UPDATE queue_keys SET running = GREATEST(queue_keys.running - slots.n, 0)
    FROM unnest(CAST(:k_envs AS varchar[]), CAST(:k_queues AS varchar[]), CAST(:k_keys AS varchar[]),
                CAST(:k_counts AS integer[])) AS slots(env_id, queue, concurrency_key, n)
    WHERE queue_keys.env_id = slots.env_id AND queue_keys.queue = slots.queue
      AND queue_keys.concurrency_key = slots.concurrency_key
    RETURNING 1
), ended AS (
    UPDATE runs SET {assignments}
    FROM {unnest(runs, columns, "r")} AS v({names})
    WHERE runs.id = v.id
    RETURNING 1
)
INSERT INTO run_events ({event_names}) SELECT * FROM {unnest(run_events, event_columns, "e")}
""")
