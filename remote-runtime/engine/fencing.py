"""Fencing: an attempt belongs to one node at a time, and a report from any other holder is refused.

A node cut off from the database past its lease loses its attempts (they are crashed and retried,
or restored, on another node). When it comes back, its buffered reports about them must not land:
a completion would finish a run twice, logs and metadata would mix into another attempt's. Every
report names its node (`WorkerReport.node_id`) and each entry its attempt; an entry is stale when
the run has moved on to another attempt, or another node holds it now. The whole report is then
refused with 409 `stale_attempt`, the stale entries listed in `details`, and the worker drops those
and sends the rest again (`without_stale`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from outlast.wire import RunStatus, WorkerReport

from ..errors import Conflict
from ..store.schema import runs

HELD = (RunStatus.EXECUTING.value, RunStatus.WAITING.value)


class StaleAttempts(Conflict):
    """Some entries of a report are about attempts their node no longer holds."""

    code = "stale_attempt"

    def __init__(self, stale: Iterable[tuple[str, int]]) -> None:
        self.stale = sorted(set(stale))
        runs_named = ", ".join(f"{run_id} (attempt {attempt})" for run_id, attempt in self.stale)
        super().__init__(f"these attempts are no longer held by the reporting node: {runs_named}", field="run_id")
        self.details: list[dict[str, Any]] = [{"run_id": r, "attempt": a} for r, a in self.stale]

    @classmethod
    def from_details(cls, details: Iterable[dict[str, Any]]) -> StaleAttempts:
        return cls((str(d["run_id"]), int(d["attempt"])) for d in details)


def lock_reported(c: sa.Connection, report: WorkerReport) -> dict[str, sa.Row]:
    """The rows of the runs `report` is about, locked until the transaction ends: one read serves the
    fencing check (`refuse_stale`) and the completions (`Attempts._complete`), and no other node can take
    a run over between the check and the writes.

    Completions' runs are always read; logs' and metadata's only for a worker's report (one naming its
    node), as only those are checked. Rows are locked in id order, so two reports never deadlock.
    """
    ids = {done.run_id for done in report.completions}
    if report.node_id is not None:
        ids.update(e.run_id for e in (*report.logs, *report.metadata))
    if not ids:
        return {}
    return {row.id: row for row in c.execute(_LOCK_RUNS, {"ids": sorted(ids)})}


def refuse_stale(report: WorkerReport, rows: Mapping[str, Any]) -> None:
    """Raise StaleAttempts if any entry of `report` is about an attempt its node no longer holds;
    `rows`: the runs' rows (`lock_reported`).

    Only worker reports name a node and are checked. A completion is stale unless the run is at its
    attempt and no other node holds it. A log is stale once the run is at a later attempt or another
    node holds it; metadata (which carries no attempt) once another node holds the run. A run that
    merely ended (canceled, say) is not another holder: its late logs are kept, and `_complete`
    ignores its late completion as before.
    """
    if report.node_id is None:  # the engine's own reports (lost leases crashed) hold nothing
        return
    node = report.node_id

    def other_holder(row: Any) -> bool:
        return row.status in HELD and row.node_id is not None and row.node_id != node

    stale = set()
    for done in report.completions:
        row = rows.get(done.run_id)
        if row is not None and (row.attempts != done.attempt or other_holder(row)):
            stale.add((done.run_id, done.attempt))
    for record in report.logs:
        row = rows.get(record.run_id)
        if row is not None and (row.attempts > record.attempt or other_holder(row)):
            stale.add((record.run_id, record.attempt))
    for update in report.metadata:
        row = rows.get(update.run_id)
        if row is not None and other_holder(row):
            stale.add((update.run_id, row.attempts))
    if stale:
        raise StaleAttempts(stale)


def without_stale(report: WorkerReport, refused: StaleAttempts) -> WorkerReport:
    """`report` less the entries the runtime refused (metadata of a refused run goes with them)."""
    stale = set(refused.stale)
    stale_runs = {run_id for run_id, _ in stale}
    return WorkerReport(
        node_id=report.node_id,
        logs=[r for r in report.logs if (r.run_id, r.attempt) not in stale],
        metadata=[m for m in report.metadata if m.run_id not in stale_runs],
        completions=[d for d in report.completions if (d.run_id, d.attempt) not in stale],
    )


# What the check and the completions read: not the JSON documents (payload, output...), which cost a
# decode per row and are not needed to end an attempt.
_LOCKED_COLUMNS = [c for c in runs.c if c.name not in ("payload", "output", "error", "metadata", "tags")]
_LOCK_RUNS = (sa.select(*_LOCKED_COLUMNS).where(runs.c.id.in_(sa.bindparam("ids", expanding=True)))
              .order_by(runs.c.id).with_for_update())
