"""`outlast worker --deployments` on another node: it downloads the versions the runtime serves and runs
each run on its own version, while the runtime itself runs none (OUTLAST_SERVE_DEPLOYMENTS=0)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from outlast._deployments import Deployments
from outlast.wire import RunStatus
from tests.conftest import SECRET_KEY, RuntimeProcess, runtime_process, stop_process, wait_for

from ._projects import deploy, deployed_version, write_project


@pytest.fixture
def runtime(tmp_path) -> Iterator[RuntimeProcess]:
    runtime = runtime_process(tmp_path, None, project=None, extra_env={"OUTLAST_SERVE_DEPLOYMENTS": "0",
                                                                           "OUTLAST_DEPLOY_GC_INTERVAL": "1"}).start()
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def worker(runtime, tmp_path) -> Iterator[Path]:
    data = tmp_path / "worker-data"
    env = {**os.environ, "OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": SECRET_KEY,
           "OUTLAST_TEST_SCRATCH": str(runtime.scratch), "OUTLAST_TASK_PASS_ENV": "OUTLAST_TEST_SCRATCH",
           "OUTLAST_HEARTBEAT_INTERVAL": "0.5"}
    with (tmp_path / "worker.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "outlast.cli", "worker", "--deployments", "--data-dir",
                                    str(data), "--node-id", "remote-1"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield data
    finally:
        stop_process(process)


def test_a_remote_worker_runs_each_run_on_its_own_deployed_version(runtime, worker, tmp_path):
    client = runtime.client()
    Deployments(client).env_set("DEPLOY_SECRET", "remote-secret-value")
    old = deployed_version(deploy(runtime, write_project(tmp_path / "old", "old")))
    marker = f"hold-{uuid.uuid4().hex[:8]}"
    held = client.trigger("hold", {"marker": marker})
    wait_for((runtime.scratch / f"{marker}.started").exists, timeout=90, message="the old run to start")
    new = deployed_version(deploy(runtime, write_project(tmp_path / "new", "new")))
    which = client.trigger("which")
    fresh = wait_for(lambda: (r := client.retrieve_run(which.id)).status.is_final and r, timeout=90)
    assert (fresh.version, fresh.output["code"]) == (new, "new"), fresh.error
    assert fresh.output["cwd"] == str(worker / "versions" / new)  # the worker's copy, not the runtime's
    assert fresh.output["secret"] is not None
    (runtime.scratch / marker).write_text("go")
    run = wait_for(lambda: (r := client.retrieve_run(held.id)).status.is_final and r, timeout=90)
    assert run.status is RunStatus.COMPLETED, run.error
    assert (run.output["code"], run.output["version"], run.output["child"]["version"]) == ("old", old, old)
    assert client.retrieve_run(held.id).version == old
    wait_for(lambda: not (worker / "versions" / old).exists(), timeout=120,
             message="the worker to drop the old version once the runtime stops serving it")
