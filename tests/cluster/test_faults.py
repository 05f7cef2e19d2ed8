"""Faults of a cluster of real processes (one API runtime on PostgreSQL, worker nodes each in its own
network namespace): a node cut off past its lease, and a node that vanishes (SIGKILL)."""

from __future__ import annotations

import httpx

from outlast import RunStatus
from outlast.wire import API_PREFIX
from tests.conftest import SECRET_KEY, wait_for


def _lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _started(cluster, run_id: str) -> list[str]:
    return _lines(cluster.scratch / f"{run_id}.started")


def test_a_node_cut_off_past_its_lease_cannot_report_about_the_attempt_another_node_took_over(cluster):
    node_a = cluster.start_node("node-a")
    client = cluster.client()
    run_id = client.trigger("held-first-attempt", {}).id
    wait_for(lambda: _started(cluster, run_id) == ["1"], timeout=60, message="attempt 1 to start on node-a")
    cluster.start_node("node-b")

    node_a.partition()  # a real cut: node-a's link is down, its lease runs out, node-b retries the run
    run = client.poll(run_id, interval=0.2, timeout=90)
    assert run.status is RunStatus.COMPLETED and run.attempts == 2 and run.output == {"attempt": 2}
    # Now node-a's attempt 1 finishes too, still cut off: its log, metadata and completion wait in its buffer.
    (cluster.scratch / f"{run_id}.release").touch()
    wait_for(lambda: "1" in _lines(cluster.scratch / f"{run_id}.done"), timeout=30, message="attempt 1 to end")
    node_a.heal()
    wait_for(lambda: "runtime refused a report" in node_a.log(), timeout=120,
             message=f"node-a's stale report to be refused:\n{node_a.log()}")

    run = client.retrieve_run(run_id)
    assert run.status is RunStatus.COMPLETED and run.attempts == 2 and run.output == {"attempt": 2}
    assert run.metadata == {"finished_attempt": 2}, "the stale attempt's metadata was refused"
    events = client.run_events(run_id)
    messages = [e.message for e in events]
    assert sum(1 for e in events if e.kind == "status" and e.message.endswith("completed")) == 1, messages
    assert "finished on attempt 2" in messages and "finished on attempt 1" not in messages, messages
    assert any("attempt 2 started on node-b" in m for m in messages), messages

    # The refusal itself: a clear 409 naming the stale attempt.
    stale = {"node_id": "node-a", "completions": [{"run_id": run_id, "attempt": 1, "outcome": "ok"}]}
    answer = httpx.post(f"{cluster.api.url}{API_PREFIX}/worker/report", json=stale,
                        headers={"Authorization": f"Bearer {SECRET_KEY}"})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "stale_attempt"
    assert answer.json()["details"] == [{"run_id": run_id, "attempt": 1}]


def test_the_attempts_of_a_node_that_vanishes_are_retried_once_on_another(cluster):
    node_a = cluster.start_node("node-a")
    client = cluster.client()
    run_ids = [client.trigger("held-first-attempt", {}).id for _ in range(2)]
    try:
        wait_for(lambda: all(_started(cluster, r) == ["1"] for r in run_ids), timeout=60,
                 message="both first attempts to start on node-a")
        cluster.start_node("node-b")
        node_a.kill()

        for run_id in run_ids:
            run = client.poll(run_id, interval=0.2, timeout=90)
            assert run.status is RunStatus.COMPLETED and run.attempts == 2 and run.output == {"attempt": 2}
            assert _started(cluster, run_id) == ["1", "2"], "retried once"
            assert _lines(cluster.scratch / f"{run_id}.done") == ["2"], "the lost attempt never finished"
            messages = [e.message for e in client.run_events(run_id)]
            assert any("stopped renewing its lease" in m for m in messages), messages
            assert any("attempt 2 started on node-b" in m for m in messages), messages
    finally:
        for run_id in run_ids:  # a task process that outlived its supervisor would end now
            (cluster.scratch / f"{run_id}.release").touch()
