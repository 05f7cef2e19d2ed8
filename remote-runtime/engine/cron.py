"""Cron ticks: when a schedule fires, in its own time zone, across daylight-saving changes.

Ticks are computed by croniter on aware datetimes in the schedule's zone. When a wall-clock time
repeats (the autumn change), a schedule with fixed hours fires at its first occurrence only; one
whose hour field is `*` keeps its real-time rhythm through both. A time that does not exist (the
spring change) fires at the first time after the gap, as croniter does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from outlast._schedules import cron_problem

from ..errors import EngineError

UPCOMING = 5


class InvalidSchedule(EngineError):
    status_code = 422
    code = "invalid_request"


@functools.lru_cache(maxsize=4096)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@functools.lru_cache(maxsize=4096)
def _fixed_hours(cron: str) -> bool:
    # Hour field not `*`: such a schedule names wall-clock times, which a repeated hour must not double.
    return croniter(cron).expanded[1] != ["*"]


def _repeated(moment: datetime) -> bool:
    """True for the second occurrence of an ambiguous wall-clock time (after clocks went back)."""
    naive = moment.replace(tzinfo=None)
    first = naive.replace(tzinfo=moment.tzinfo, fold=0).utcoffset()
    second = naive.replace(tzinfo=moment.tzinfo, fold=1).utcoffset()
    return first != second and moment.utcoffset() == second


def _walk(cron: str, timezone: str, start: float, *, backwards: bool = False) -> Iterator[float]:
    zone = _zone(timezone)
    it = croniter(cron, datetime.fromtimestamp(start, zone))
    skip_repeats = _fixed_hours(cron)
    step = it.get_prev if backwards else it.get_next
    while True:
        moment = step(datetime)
        if skip_repeats and _repeated(moment):
            continue
        yield moment.timestamp()


@functools.lru_cache(maxsize=65536)
def ticks_after(cron: str, timezone: str, after: float, count: int = UPCOMING) -> tuple[float, ...]:
    """The first `count` ticks strictly after `after` (UNIX seconds)."""
    walk = _walk(cron, timezone, after)
    return tuple(next(walk) for _ in range(count))


def next_tick(cron: str, timezone: str, after: float) -> float:
    return ticks_after(cron, timezone, after)[0]  # shares the cache with the payloads' `upcoming`


def latest_tick(cron: str, timezone: str, now: float) -> float:
    """The last tick at or before `now`."""
    candidate = next(_walk(cron, timezone, now, backwards=True))
    following = next_tick(cron, timezone, candidate)
    return following if following <= now else candidate


def check(cron: str, timezone: str, now: float, prefix: str = "") -> float:
    """Validate an expression and zone; returns the first tick after `now`."""
    problem = cron_problem(cron)
    if problem:
        raise InvalidSchedule(problem, field=prefix + "cron")
    try:
        _zone(timezone)
    except (ValueError, KeyError):
        raise InvalidSchedule(f"unknown time zone {timezone!r}", field=prefix + "timezone") from None
    try:
        return next_tick(cron, timezone, now)
    except CroniterError:
        raise InvalidSchedule(f"cron expression {cron!r} never fires", field=prefix + "cron") from None


def iso(value: float | None) -> str | None:
    """A UNIX time as the ISO 8601 text schedule payloads carry."""
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


@functools.lru_cache(maxsize=4096)
def upcoming(cron: str, timezone: str, tick: float) -> tuple[str, ...]:
    """The ticks after `tick`, as ISO text (a schedule payload's `upcoming`)."""
    # Shared by every schedule with this expression and zone firing this tick (one per tenant, say).
    return tuple(datetime.fromtimestamp(t, UTC).isoformat() for t in ticks_after(cron, timezone, tick))
