"""A run's timeline for the page: its events as rows with offsets, checkpoint sizes and durations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from outlast.wire import Run, RunEvent


@dataclass(frozen=True)
class TimelineRow:
    event: RunEvent
    offset_s: float  # seconds since the run was created
    status: str | None
    facts: list[str]  # checkpoint size and duration, restore node, error


def _facts(data: dict[str, Any]) -> list[str]:
    facts = []
    checkpoint = data.get("checkpoint") or {}
    if checkpoint:
        facts.append(f"mode {checkpoint.get('mode')}")
        if checkpoint.get("stored_bytes") is not None:
            facts.append(f"{checkpoint['stored_bytes'] / 1e6:.1f} MB stored")
        if checkpoint.get("checkpoint_ms") is not None:
            facts.append(f"dump {checkpoint['checkpoint_ms']:.0f} ms")
        if checkpoint.get("reason"):
            facts.append(f"not checkpointed: {checkpoint['reason']}")
    for key, label in (("node", "node"), ("node_id", "node"), ("restore_ms", "restore ms")):
        if data.get(key) is not None:
            facts.append(f"{label} {data[key]}")
    if data.get("error"):
        error = data["error"]
        facts.append(f"error: {error.get('message', error) if isinstance(error, dict) else error}")
    return facts


def timeline(run: Run, events: list[RunEvent]) -> tuple[list[TimelineRow], list[RunEvent]]:
    """The status and lifecycle events as rows, and the log lines apart."""
    start = run.created_at.timestamp()
    rows, logs = [], []
    for event in events:
        if event.kind == "log":
            logs.append(event)
            continue
        rows.append(TimelineRow(event=event, offset_s=round(event.time.timestamp() - start, 2),
                                status=event.data.get("status"), facts=_facts(event.data)))
    return rows, logs
