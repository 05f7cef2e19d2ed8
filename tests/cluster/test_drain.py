"""Draining a node (`outlast worker drain NODE`, or SIGTERM on `outlast worker`): its executing runs,
caught mid-computation (not at a wait), are checkpointed by CRIU and carry on on another node, same
attempt, same memory. Real processes, real CRIU, real S3 (moto), each node in its own network namespace."""

from __future__ import annotations

from outlast import RunStatus
from tests.cluster.conftest import CHECKPOINTS, DRAIN_RUNS, DRILL_RUNS
from tests.conftest import PROJECTS, runtime_process, wait_for
from tests.e2e._shared import prod_key

RUNS = DRAIN_RUNS
TO, EVERY = 100_000, 1_000  # 100 progress marks per run


def test_outlast_worker_drain_hands_a_nodes_running_attempts_to_another_by_checkpoint(cluster):
    node_a = cluster.start_node("node-a", slots=RUNS, extra_env={
        **cluster.s3_env(), **CHECKPOINTS, "OUTLAST_DRAIN_GRACE": "0.5"})
    client = cluster.client()
    gate = cluster.scratch / "gate"
    # Each run counts to its 5th mark, then holds there, running (not at a wait), until the gate is gone:
    # after the drain, so that however many runs there are and however long their dumps take, every one
    # is frozen mid-computation (the runtime test below freezes one while it counts).
    gate.touch()
    run_ids = [client.trigger("count", {"to": TO, "every": EVERY, "pause": 0.05, "gate_at": 5 * EVERY}).id
               for _ in range(RUNS)]
    wait_for(lambda: all(len(cluster.progress(r)) >= 5 for r in run_ids), timeout=60 + 3 * RUNS,
             message="every run to be counting on node-a")
    cluster.start_node("node-b", slots=RUNS, extra_env={**cluster.s3_env(), **CHECKPOINTS})

    unknown = cluster.cli("worker", "drain", "node-z")
    assert unknown.returncode == 1 and "no worker node 'node-z'" in unknown.stderr, unknown.stderr
    assert "node-a" in unknown.stderr, "the message names the nodes it knows"

    drained = cluster.cli("worker", "drain", "node-a", "--wait")
    assert drained.returncode == 0, drained.stdout + drained.stderr + node_a.log()
    assert "node-a: drained (holds no attempts)" in drained.stdout
    assert node_a.process is not None and node_a.process.wait(60) == 0, node_a.log()
    assert "asked by the runtime" in node_a.log()
    assert all(len(cluster.progress(r)) == 5 for r in run_ids), "caught mid-computation, at its 5th mark"
    gate.unlink()

    for run_id in run_ids:
        run = client.poll(run_id, interval=0.2, timeout=120 + 3 * RUNS)
        messages = [e.message for e in client.run_events(run_id)]
        assert run.status is RunStatus.COMPLETED, messages
        assert run.attempts == 1, "the same attempt carried on"
        assert run.output == {"total": TO * (TO + 1) // 2, "attempt": 1}
        assert any("started on node-a" in m for m in messages) and any("resumes on node-b" in m for m in messages), \
            messages
        progress = cluster.progress(run_id)
        steps = [step for _, step in progress]
        assert steps == list(range(EVERY, TO + 1, EVERY)), "progress never went back, nor was any step repeated"
        assert {attempt for attempt, _ in progress} == {1}
        assert (cluster.scratch / f"{run_id}.done").read_text() == "1\n", "its end was marked once"
    assert "drained" in node_a.log(), node_a.log()
    # Its task processes were in cgroups (the namespace keeps the host's /sys/fs/cgroup): limits enforced.
    assert "machine limits NOT enforced" not in node_a.log(), node_a.log()
    assert all(client.retrieve_run(r).cpu_ms is not None for r in run_ids), "CPU time measured by its cgroup"


def test_a_runtime_stopped_with_a_running_attempt_drains_it_and_restores_it_when_it_starts_again(tmp_path):
    """`outlast runtime` (its own worker, SQLite, a local checkpoint store): SIGTERM checkpoints the
    running attempt, which goes back to the queue; the runtime started again restores it. Then, on the
    same runtime: time frozen in a checkpoint does not count against max_duration."""
    runtime = runtime_process(tmp_path, None, project="cluster", slots=1, extra_env={
        **CHECKPOINTS, "OUTLAST_DRAIN_GRACE": "0.2"})
    scratch = runtime.scratch
    gate = scratch / "gate"
    gate.touch()
    try:
        client = runtime.start().client()
        run_id = client.trigger("count", {"to": 40_000, "every": EVERY, "pause": 0.05, "gate_at": 5 * EVERY}).id
        path = scratch / f"{run_id}.progress"
        wait_for(lambda: path.exists() and len(path.read_text().split("\n")) > 5, timeout=60, message="counting")
        gate.unlink()
        runtime.stop()
        assert "drained: 1 attempts handed over" in runtime.log()  # (uvicorn re-raises SIGTERM once shut down)
        marks_then = len(path.read_text().splitlines())
        assert marks_then < 40, "stopped mid-computation"

        runtime.start()
        run = client.poll(run_id, interval=0.2, timeout=120)
        messages = [e.message for e in client.run_events(run_id)]
        assert run.status is RunStatus.COMPLETED and run.attempts == 1, messages
        assert run.output == {"total": 40_000 * 40_001 // 2, "attempt": 1}
        assert any("its node is draining; checkpointed" in m for m in messages), messages
        steps = [int(line.split()[1]) for line in path.read_text().splitlines()]
        assert steps == list(range(EVERY, 40_001, EVERY)), "carried on from where it was frozen"
        assert_frozen_time_does_not_count_against_max_duration(runtime, client)
    finally:
        runtime.close()


def assert_frozen_time_does_not_count_against_max_duration(runtime, client) -> None:
    """max_duration 4 s: a run that waits 5 s (checkpointed) between two short stretches completes; one
    that runs 1 s, is checkpointed, and runs 3.5 s more is timed out in its second stretch (fetching and
    restoring an image is frozen time too: under load it can take longer than the whole budget)."""
    waits = client.trigger("paced", {"before": 0.2, "wait": 5, "after": 0.2}).id
    runs = client.trigger("paced", {"before": 1, "wait": 2.5, "after": 3.5}).id  # its slot: the other's, frozen
    done = client.poll(waits, interval=0.2, timeout=120)
    messages = [e.message for e in client.run_events(waits)]
    assert done.status is RunStatus.COMPLETED, messages
    assert any("; checkpointed" in m for m in messages), messages
    timed_out = client.poll(runs, interval=0.2, timeout=120)
    messages = [e.message for e in client.run_events(runs)]
    assert timed_out.status is RunStatus.TIMED_OUT, messages
    assert any("; checkpointed" in m for m in messages), messages
    assert "max_duration" in timed_out.error.message
    assert (runtime.scratch / f"{runs}.resumed").exists(), "it ran out of time after its restore, not before"


def test_a_run_a_draining_node_cannot_checkpoint_is_stopped_and_retried_and_its_timeline_says_why(cluster):
    node_a = cluster.start_node("node-a", slots=1, extra_env={"OUTLAST_CHECKPOINTS": "off",
                                                               "OUTLAST_DRAIN_GRACE": "0.2"})
    client = cluster.client()
    gate = cluster.scratch / "gate"
    gate.touch()
    run_id = client.trigger("count", {"to": 10 * EVERY, "every": EVERY, "pause": 0.05, "gate_at": 5 * EVERY}).id
    wait_for(lambda: len(cluster.progress(run_id)) >= 5, timeout=60, message="the run to be counting")
    cluster.start_node("node-b", slots=1)
    node_a.drain()  # the run holds at the gate, running, past the grace
    gate.unlink()

    run = client.poll(run_id, interval=0.2, timeout=120)
    messages = [e.message for e in client.run_events(run_id)]
    assert run.status is RunStatus.COMPLETED and run.attempts == 2, messages
    assert any("its node is draining but could not move it by checkpoint" in m and "off" in m
               for m in messages), messages
    assert any("attempt 2 started on node-b" in m for m in messages), messages


def test_an_upgrade_drill_drains_every_node_in_turn_and_no_run_loses_or_repeats_work(cluster):
    """Nodes a and b run DRILL_RUNS counting runs; c and d come up, then a drains, then b: every run
    ends in its first attempt wherever it ended up, its progress never went back."""
    env = {**cluster.s3_env(), **CHECKPOINTS, "OUTLAST_DRAIN_GRACE": "0.2"}
    client = cluster.client()
    gate = cluster.scratch / "gate"
    gate.touch()
    slots = (DRILL_RUNS + 1) // 2  # every run executes at once on a and b, and then on c and d
    first = cluster.start_nodes(["node-a", "node-b"], slots=slots, extra_env=env)
    run_ids = [client.trigger("count", {"to": TO, "every": EVERY, "pause": 0.05, "gate_at": 5 * EVERY}).id
               for _ in range(DRILL_RUNS)]
    wait_for(lambda: all(len(cluster.progress(r)) >= 5 for r in run_ids), timeout=60 + 3 * DRILL_RUNS,
             message="every run counting")
    cluster.start_nodes(["node-c", "node-d"], slots=slots, extra_env=env)
    for old in first:  # the runs hold at the gate meanwhile, running: each drain moves every run it has
        old.drain(grace=120 + 10 * slots)  # its checkpoints take turns: the drain may take a while
        assert "drained" in old.log(), old.log()
    gate.unlink()

    for run_id in run_ids:
        run = client.poll(run_id, interval=0.2, timeout=180 + 3 * DRILL_RUNS)
        messages = [e.message for e in client.run_events(run_id)]
        assert run.status is RunStatus.COMPLETED and run.attempts == 1, messages
        assert [step for _, step in cluster.progress(run_id)] == list(range(EVERY, TO + 1, EVERY))
        assert (cluster.scratch / f"{run_id}.done").read_text() == "1\n"
    moved = [m for r in run_ids for m in (e.message for e in client.run_events(r)) if "its node is draining" in m]
    assert len(moved) >= DRILL_RUNS, "every run was moved at least once (a run on b could move twice)"


def test_a_deployment_node_drained_by_the_command_hands_its_runs_over(cluster):
    """`outlast worker --deployments` nodes drain as `--project` ones do (SIGTERM: the same signal
    handling, tested above): `outlast worker drain` moves their running attempts by checkpoint. The
    project is deployed to prod (dev's runs stay on working copies for the other tests); the nodes share
    one data directory, where they unpack the version (on machines of their own each would have it at
    the same path: a restored process finds its files there)."""
    key = prod_key(cluster.api)
    deployed = cluster.cli("deploy", "--project", str(PROJECTS / "cluster"), secret_key=key)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    shared, to = cluster.root / "deployments-data", 20 * EVERY
    env = {**cluster.s3_env(), **CHECKPOINTS, "OUTLAST_DRAIN_GRACE": "0.2"}
    node_a = cluster.start_node("node-a", project=None, extra_env=env, data_dir=shared, secret_key=key)
    client = cluster.client(key)
    gate = cluster.scratch / "gate"
    gate.touch()  # the runs hold at their 5th mark, running, until the drain is done
    run_ids = [client.trigger("count", {"to": to, "every": EVERY, "pause": 0.05, "gate_at": 5 * EVERY}).id
               for _ in range(2)]
    wait_for(lambda: all(len(cluster.progress(r)) >= 5 for r in run_ids), timeout=90,
             message="every run to be counting on node-a")
    cluster.start_node("node-b", project=None, extra_env=env, data_dir=shared, secret_key=key)

    drained = cluster.cli("worker", "drain", "node-a", "--wait", secret_key=key)
    assert drained.returncode == 0, drained.stdout + drained.stderr + node_a.log()
    assert node_a.process is not None and node_a.process.wait(60) == 0, node_a.log()
    assert "drained: 2 attempts handed over" in node_a.log(), node_a.log()
    gate.unlink()
    for run_id in run_ids:
        run = client.poll(run_id, interval=0.2, timeout=120)
        messages = [e.message for e in client.run_events(run_id)]
        assert run.status is RunStatus.COMPLETED and run.attempts == 1, messages
        assert run.output == {"total": to * (to + 1) // 2, "attempt": 1}
        assert any("resumes on node-b" in m for m in messages), messages
        assert [step for _, step in cluster.progress(run_id)] == list(range(EVERY, to + 1, EVERY))
        assert (cluster.scratch / f"{run_id}.done").read_text() == "1\n"
