"""Draining `outlast worker --deployments` nodes: SIGTERM and `outlast worker drain` hand their running
attempts over by checkpoint as they do for `outlast worker --project`. The cluster's project is
deployed; every node runs its deployed version, unpacked in one data directory all of them share
(on separate machines each would have its own at the same path: a restored process finds its files)."""

from __future__ import annotations

from outlast import RunStatus
from tests.cluster.conftest import CHECKPOINTS
from tests.conftest import PROJECTS, wait_for

RUNS = 2
TO, EVERY = 20_000, 1_000


def test_deployment_nodes_drain_by_signal_and_by_command_and_their_runs_carry_on(cluster):
    deployed = cluster.cli("deploy", "--project", str(PROJECTS / "cluster"))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    shared = cluster.root / "deployments-data"
    env = {**cluster.s3_env(), **CHECKPOINTS, "OUTLAST_DRAIN_GRACE": "0.2"}
    node_a = cluster.start_node("node-a", project=None, slots=RUNS, extra_env=env, data_dir=shared)
    client = cluster.client()
    gate = cluster.scratch / "gate"
    gate.touch()  # the runs hold at their 5th mark, running, until the end of the test
    run_ids = [client.trigger("count", {"to": TO, "every": EVERY, "pause": 0.05, "gate_at": 5 * EVERY}).id
               for _ in range(RUNS)]
    wait_for(lambda: all(len(cluster.progress(r)) >= 5 for r in run_ids), timeout=90,
             message="every run to be counting on node-a")
    node_b = cluster.start_node("node-b", project=None, slots=RUNS, extra_env=env, data_dir=shared)

    node_a.drain()  # SIGTERM
    assert node_a.process is not None and node_a.process.returncode == 0, node_a.log()
    assert "drained: 2 attempts handed over" in node_a.log(), node_a.log()
    wait_for(lambda: all(any("resumes on node-b" in e.message for e in client.run_events(r)) for r in run_ids),
             timeout=90, message="both runs to resume on node-b")

    # node-a again (a new process under the same id: the drain asked of the one before is not its own)
    node_a = cluster.start_node("node-a", project=None, slots=RUNS, extra_env=env, data_dir=shared,
                                log_name="node-a-again")
    drained = cluster.cli("worker", "drain", "node-b", "--wait")
    assert drained.returncode == 0, drained.stdout + drained.stderr + node_b.log()
    assert node_b.process is not None and node_b.process.wait(60) == 0, node_b.log()
    gate.unlink()

    for run_id in run_ids:
        run = client.poll(run_id, interval=0.2, timeout=120)
        messages = [e.message for e in client.run_events(run_id)]
        assert run.status is RunStatus.COMPLETED and run.attempts == 1, messages
        assert run.output == {"total": TO * (TO + 1) // 2, "attempt": 1}
        assert "resumes on node-a" in [m for m in messages if "resumes on" in m][-1], messages
        assert [step for _, step in cluster.progress(run_id)] == list(range(EVERY, TO + 1, EVERY))
        assert (cluster.scratch / f"{run_id}.done").read_text() == "1\n"
    assert "asked by the runtime" not in node_a.log(), "the new node-a was not drained"
