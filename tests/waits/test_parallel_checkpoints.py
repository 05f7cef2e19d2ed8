"""Many checkpoints at once on one node (real runtime, real CRIU, real task processes).

Dumps and restores run side by side, up to OUTLAST_CHECKPOINT_CONCURRENCY at once; a runtime killed
while several dumps are under way leaves nothing half written that a run would be restored from;
and while dumps lag behind, the node claims no new runs rather than piling processes up.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outlast import RunStatus
from tests.conftest import wait_for
from tests.waits.test_store_failures import trigger_waits
from tests.waits.test_waits import messages


def assert_finished_once_with_their_state(client, run_ids: list[str], marker: str, attempts: set[int]) -> None:
    for n, run_id in enumerate(run_ids):
        run = client.poll(run_id, timeout=240)
        assert run.status is RunStatus.COMPLETED, messages(client, run_id)
        assert run.attempts in attempts, (run.attempts, messages(client, run_id))
        assert run.output["counter"] == 2 and run.output["sum_ok"]
        assert run.output["file"] == "before the wait\nafter the wait\n"
        assert run.output["local"]["name"] == f"{marker}-{n}"


def nothing_left(data: Path) -> None:
    """No image in scratch, no checkpoint object, no page-pool record but the version's kept pages:
    nothing a run could be restored from."""
    assert not list((data / "scratch").glob("dump-*")), sorted((data / "scratch").iterdir())
    store = data / "checkpoints"
    assert not [p for p in store.rglob("*") if p.is_file() and ".pages" not in p.parts], sorted(store.rglob("*"))
    records = [json.loads(path.read_text())["key"] for path in (store / ".pages" / "keys").glob("*")]
    assert all(key.startswith("@version/") for key in records), f"page-pool records of keys that are gone: {records}"


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the node's side; the database does not matter
def test_eight_runs_are_checkpointed_at_once_and_each_resumes_with_its_state(make_runtime, tmp_path):
    runtime = make_runtime(project="waits", slots=8, extra_env={
        "OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_CHECKPOINT_CONCURRENCY": "8"})
    client = runtime.client()
    run_ids = trigger_waits(client, 8, "parallel")
    assert_finished_once_with_their_state(client, run_ids, "parallel", {1})
    for run_id in run_ids:
        assert any("checkpointed" in m for m in messages(client, run_id)), messages(client, run_id)
    assert "Can't create a directory" not in runtime.log()
    nothing_left(tmp_path / "data")


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_runtime_killed_among_parallel_dumps_leaves_nothing_half_written_and_every_run_finishes(
        make_runtime, tmp_path):
    runtime = make_runtime(project="waits", slots=8, extra_env={
        "OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_CHECKPOINT_CONCURRENCY": "2", "OUTLAST_TEST_PAUSE_AFTER_DUMP": "120"})
    client = runtime.client()
    run_ids = trigger_waits(client, 8, "crash")
    scratch = tmp_path / "data" / "scratch"
    # Killed once some dumps are done (marked pending, not yet stored) while others are still to come.
    wait_for(lambda: len(list(scratch.glob("dump-*.json"))) >= 2, timeout=120, message="two dumps pending")
    pending = len(list(scratch.glob("dump-*.json")))
    runtime.kill()
    assert pending < 8, "all eight were dumped before the kill: nothing was in the middle"
    del runtime.env["OUTLAST_TEST_PAUSE_AFTER_DUMP"]
    runtime.start()
    # Committed dumps resume in their first attempt; the others start again (a fresh attempt).
    assert_finished_once_with_their_state(client, run_ids, "crash", {1, 2})
    resumed = sum(client.retrieve_run(run_id).attempts == 1 for run_id in run_ids)
    assert resumed >= 2, "the dumps left pending were committed and resumed"
    nothing_left(tmp_path / "data")


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_claims_wait_while_dumps_lag_behind_and_no_run_is_lost(make_runtime, tmp_path):
    runtime = make_runtime(project="waits", slots=6, extra_env={
        "OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_CHECKPOINT_CONCURRENCY": "1",
        "OUTLAST_MAX_QUEUED_CHECKPOINTS": "1"})
    client = runtime.client()
    run_ids = trigger_waits(client, 14, "pressure")  # more than the node runs at once: slots and dump queue
    assert_finished_once_with_their_state(client, run_ids, "pressure", {1})
    log = runtime.log()
    assert "claims wait: " in log and "processes wait for their checkpoint (more than 1)" in log, log[-3000:]
    assert "claims go on after" in log
    # A run whose wait ended while it queued for its dump just goes on in memory (not checkpointed).
    checkpointed = [any("checkpointed" in m for m in messages(client, run_id)) for run_id in run_ids]
    assert sum(checkpointed) > 1, checkpointed
    nothing_left(tmp_path / "data")
