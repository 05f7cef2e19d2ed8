"""Machine presets enforced with real cgroups on real task processes (this host: cgroup v1 for
memory, cpu, cpuacct and pids), and a waiting run checkpointed with CRIU that comes back with the
same limits."""

from __future__ import annotations

import shutil

import httpx
import pytest
from typer.testing import CliRunner

from outlast import InvalidRequestError, RunStatus, trigger_options
from outlast.cli import app
from outlast.runtime.worker import cgroups
from outlast.wire.machines import MACHINES
from tests.conftest import PG_ADMIN_URL, SECRET_KEY, _create_pg_database, _drop_pg_database, runtime_process, wait_for
from tests.e2e._shared import shared_runtime_fixture

ENV = {"OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_PIDS_LIMIT": "64"}
shared_runtime = shared_runtime_fixture(project="machines", slots=2, extra_env=ENV)
MICRO = MACHINES["micro"]


def _v1_host() -> bool:
    found, _ = cgroups.detect()
    return all(c in found and found[c].version == 1 for c in ("memory", "cpu", "cpuacct", "pids"))


pytestmark = pytest.mark.skipif(not _v1_host(), reason="the tasks read cgroup v1 files")


@pytest.fixture
def database_url():
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _drop_pg_database(name)


@pytest.fixture
def client(shared_runtime):
    return shared_runtime.client()


def finished(client, run_id: str, timeout: float = 90):
    return wait_for(lambda: (run := client.retrieve_run(run_id)).is_final and run, timeout=timeout,
                    message=f"run {run_id} to finish")


def test_an_attempt_past_its_memory_ends_out_of_memory_and_its_retry_on_a_bigger_machine_completes(
        shared_runtime, client):
    run = finished(client, client.trigger("hog", {"mb": 400}).id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.attempts == 2
    assert run.machine == "small-2x", "the retry ran on the policy's preset"
    assert run.output["machine"] == "small-2x"
    assert run.output["limits"]["memory"] == MACHINES["small-2x"].memory_bytes
    failed = [e for e in client.run_events(run.id) if e.kind == "status" and e.attempt == 1][-1]
    error = failed.data["error"]
    assert error["type"] == "TaskOutOfMemoryError"
    assert "machine micro" in error["message"] and "limit 256 MiB" in error["message"]
    peak = failed.data["peak_memory_bytes"]
    assert MICRO.memory_bytes * 0.9 <= peak <= MICRO.memory_bytes, "its peak reached the limit"
    assert f"peak {peak / 2**20:.0f} MiB" in error["message"]
    assert "on machine small-2x" in failed.message
    assert run.peak_memory_bytes >= 400 * 2**20, "the completed attempt held its 400 MB"
    assert run.cpu_ms is not None and run.cpu_ms > 0
    shown = CliRunner().invoke(app, ["runs", "show", run.id, "--api-url", shared_runtime.url,
                                     "--secret-key", SECRET_KEY])
    assert shown.exit_code == 0, shown.output
    assert f"peak memory  {run.peak_memory_bytes / 2**20:.1f} MiB" in shown.output
    assert f"cpu time     {run.cpu_ms / 1000:.2f}s" in shown.output
    assert "machine      small-2x" in shown.output


def test_without_an_out_of_memory_retry_the_run_fails_out_of_memory(client):
    run = finished(client, client.trigger("hog", {"mb": 400}, trigger_options(machine="micro", max_attempts=1)).id)
    assert run.status is RunStatus.CRASHED
    assert run.error.type == "TaskOutOfMemoryError"
    assert run.machine == "micro"


def test_a_cpu_bound_task_on_micro_gets_about_a_quarter_of_a_core(client):
    seconds = 3
    run = finished(client, client.trigger("spin", {"seconds": seconds}).id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output["limits"]["cpu_quota"] == 25_000
    cores = run.cpu_ms / (seconds * 1000)  # CPU time from its cgroup's cpuacct.usage over the busy wall time
    assert 0.05 < cores < 0.5, f"{cores:.2f} cores"


def test_a_fork_bomb_stops_at_the_pid_limit(client):
    run = finished(client, client.trigger("fork-bomb", {}).id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output["pids_max"] == "64"
    assert run.output["refused"] == "EAGAIN"
    assert 0 < run.output["forked"] < 64


def test_a_bigger_trigger_option_overrides_the_tasks_preset(client):
    run = finished(client, client.trigger("spin", {"seconds": 0.1}, trigger_options(machine="small-2x")).id)
    assert run.output["limits"] == {"memory": 2**30, "cpu_quota": 100_000, "pids": "64"}


def test_a_waiting_run_checkpointed_with_its_limits_resumes_with_them(client):
    run_id = client.trigger("limited-wait", {"seconds": 4, "spin": 2}).id
    run = finished(client, run_id)
    assert run.status is RunStatus.COMPLETED, run.error
    before, after = run.output["before"], run.output["after"]
    messages = [e.message for e in client.run_events(run_id) if e.kind == "status"]
    assert any("checkpoint" in m for m in messages), messages
    assert before["host_pid"] != after["host_pid"], "it was restored, not kept alive"
    assert before["limits"] == after["limits"] == {"memory": MICRO.memory_bytes, "cpu_quota": 25_000, "pids": "64"}
    # 2 s of spinning under a quarter-core quota before the checkpoint: about 500 ms, counted with the rest
    assert run.cpu_ms >= 300, run.cpu_ms


def test_a_machine_larger_than_the_node_is_refused(client):
    run = finished(client, client.trigger("spin", {"seconds": 0.1}, trigger_options(machine="large-2x")).id)
    assert run.status is RunStatus.FAILED
    assert run.error.type == "MachineTooLarge"
    assert "large-2x (8 vCPU, 16 GB) is larger than this node" in run.error.message
    assert run.attempts == 1, "not retried: no attempt could run it here"


def test_an_unknown_preset_in_a_trigger_is_a_422_naming_the_field_and_makes_no_run(shared_runtime, client):
    before = client.list_runs(limit=1).data
    response = httpx.post(f"{shared_runtime.url}/api/v1/tasks/spin/trigger", json={"options": {"machine": "huge"}},
                          headers={"Authorization": f"Bearer {SECRET_KEY}"})
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "options.machine"
    assert "choose one of micro, small-1x" in body["message"]
    with pytest.raises(InvalidRequestError) as caught:
        trigger_options(machine="huge")
    assert caught.value.field == "machine"
    assert client.list_runs(limit=1).data == before


def test_doctor_reports_the_cgroup_version_of_each_controller_and_task_cgroups():
    result = CliRunner().invoke(app, ["doctor"])
    assert "ok  cgroup memory: v1 at /sys/fs/cgroup/memory" in result.output
    assert "ok  cgroup pids: v1 at /sys/fs/cgroup/pids" in result.output
    assert "ok  task cgroups: machine limits enforced with cgroups (memory v1, cpu v1, cpuacct v1, pids v1)" \
        in result.output
    assert "user namespaces: " in result.output and "runc: " in result.output


def test_a_run_checkpointed_on_one_node_resumes_on_another_with_its_limits(tmp_path, database_url):
    shared = {"OUTLAST_CHECKPOINT_STORE": str(tmp_path / "checkpoints"), "OUTLAST_PROCESS_DIR": str(tmp_path / "p"),
              **ENV}
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(runtime_process(tmp_path / name, database_url, project="machines", node_id=f"node-{name}",
                                     extra_env=shared))
    node_a, node_b = nodes
    try:
        node_a.start()
        client = node_a.client()
        run_id = client.trigger("limited-wait", {"seconds": 5}).id
        wait_for(lambda: client.retrieve_run(run_id).status is RunStatus.WAITING, timeout=30,
                 message="the run to be checkpointed")
        node_a.stop()
        shutil.rmtree(tmp_path / "p")  # node B is another machine: nothing of node A's is on its disk
        node_b.start()
        run = finished(node_b.client(), run_id)
        assert run.status is RunStatus.COMPLETED, run.error
        messages = [e.message for e in node_b.client().run_events(run_id) if e.kind == "status"]
        assert any("resumes on node-b" in m for m in messages), messages
        micro = {"memory": MICRO.memory_bytes, "cpu_quota": 25_000, "pids": "64"}
        assert run.output["before"]["limits"] == run.output["after"]["limits"] == micro
    finally:
        node_a.close()
        node_b.close()


def _executing(client, ids: list[str]) -> int:
    return sum(client.retrieve_run(i).status is RunStatus.EXECUTING for i in ids)


@pytest.mark.parametrize(("machine", "at_once"), [("micro", 4), ("medium-1x", 1)])
def test_slots_are_counted_in_machine_presets(shared_runtime, client, machine, at_once):
    """Two slots hold four micro attempts (half a slot each), but only one medium-1x (it needs more
    than the node's two slots, so it takes them all)."""
    name = f"slots-{machine}"
    ids = [client.trigger("gate", {"name": name}, trigger_options(machine=machine)).id for _ in range(at_once + 1)]
    try:
        wait_for(lambda: _executing(client, ids) == at_once, timeout=30, message=f"{at_once} executing at once")
        for _ in range(10):  # and no more than that, while they hold their slots
            assert _executing(client, ids) == at_once
    finally:
        (shared_runtime.scratch / f"open-{name}").touch()
    assert all(finished(client, i).status is RunStatus.COMPLETED for i in ids)
