"""Rate limits of queues: at most `limit` starts per `period` per (queue, concurrency key), by GCRA.

The generic cell rate algorithm keeps one number per key, the theoretical arrival time `tat` of the
next start at the steady rate (one per `interval = period / limit`). A start at `now` conforms if
`tat <= now + (burst - 1) * interval`, and moves `tat` to `max(tat, now) + interval`. With a burst
of 1 two starts are at least `interval` apart, so no window of `period` seconds holds more than
`limit` of them. `tat` lives in the key's `queue_keys` row, which a claim locks (FOR UPDATE) before
deciding: claims of every runtime on the database decide one after the other, so the bound holds
across replicas.

A ready row that does not conform waits in the queue with `available_at` moved to the moment it
would (its place in line projected at the steady rate), so claims skip it until then, and its
timeline says why, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .schema import queue_keys, run_events, run_queue


@dataclass(frozen=True)
class Rate:
    queue: str
    limit: int
    period: float
    burst: int

    @property
    def interval(self) -> float:
        return self.period / self.limit

    @property
    def tolerance(self) -> float:
        return (self.burst - 1) * self.interval

    def describe(self) -> str:
        burst = f", bursts of {self.burst}" if self.burst > 1 else ""
        return f"{self.limit} per {self.period:g}s{burst}"


def rate_of(row: sa.Row) -> Rate | None:
    """The rate limit of a candidate row's queue (joined from `queues`), if it has one."""
    if row.rate_limit is None or row.rate_period is None:
        return None
    return Rate(row.queue, row.rate_limit, row.rate_period, row.rate_burst or 1)


class KeyRate:
    """One key's GCRA state during a claim: which candidates start now, which wait and until when."""

    def __init__(self, rate: Rate, tat: float | None) -> None:
        self.rate = rate
        self.tat = tat
        self.changed = False
        self.waiting: list[sa.Row] = []

    def take(self, now: float) -> bool:
        """Whether a start at `now` conforms; if so it is counted."""
        tat = now if self.tat is None else max(self.tat, now)
        if tat - now > self.rate.tolerance:
            return False
        self.tat, self.changed = tat + self.rate.interval, True
        return True

    def next_starts(self, now: float) -> list[float]:
        """When each waiting row would conform, in order, at the steady rate."""
        first = max(now, (self.tat or now) - self.rate.tolerance)
        return [first + index * self.rate.interval for index in range(len(self.waiting))]


def write(connection: sa.Connection, key_rates: dict[Any, KeyRate], now: float) -> None:
    """Store the keys' new `tat` and push back the rows that must wait (with one timeline event each)."""
    moved = [{"b_env": key[0], "b_queue": key[1], "b_key": key[2], "b_tat": kr.tat}
             for key, kr in key_rates.items() if kr.changed]
    if moved:
        connection.execute(_SET_TAT, moved)
    delayed, events = [], []
    for state in key_rates.values():
        for row, start in zip(state.waiting, state.next_starts(now), strict=True):
            delayed.append({"b_run": row.run_id, "b_available_at": start})
            if not row.rate_delayed:
                events.append(_event(row.run_id, now, state.rate, start))
    if delayed:
        connection.execute(_DELAY, delayed)
    if events:
        connection.execute(run_events.insert(), events)


def _event(run_id: str, now: float, rate: Rate, start: float) -> dict[str, Any]:
    return {"run_id": run_id, "time": now, "kind": "rate_limited", "attempt": None, "level": None,
            "message": f"delayed by the rate limit of queue {rate.queue!r} ({rate.describe()}): "
                       f"starts in {start - now:.2f}s at the earliest",
            "data": {"queue": rate.queue, "limit": rate.limit, "period": rate.period, "burst": rate.burst,
                     "available_at": start}}


def lock_keys(connection: sa.Connection, keys: Sequence[Any]) -> dict[Any, sa.Row]:
    """Lock the keys' rows (in a fixed order: no deadlock between claimers); their `running` and `rate_tat`."""
    return {key: connection.execute(_LOCK_KEY, {"b_env": key[0], "b_queue": key[1], "b_key": key[2]}).first()
            for key in sorted(keys)}


_KEY_MATCHES = sa.and_(queue_keys.c.env_id == sa.bindparam("b_env"), queue_keys.c.queue == sa.bindparam("b_queue"),
                       queue_keys.c.concurrency_key == sa.bindparam("b_key"))
_LOCK_KEY = sa.select(queue_keys.c.running, queue_keys.c.rate_tat).where(_KEY_MATCHES).with_for_update()
_SET_TAT = queue_keys.update().where(_KEY_MATCHES).values(rate_tat=sa.bindparam("b_tat"))
_DELAY = run_queue.update().where(run_queue.c.run_id == sa.bindparam("b_run")).values(
    available_at=sa.bindparam("b_available_at"), rate_delayed=True)
