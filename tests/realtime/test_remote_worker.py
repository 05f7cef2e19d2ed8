"""Streams written by a task on a remote worker (`outlast worker`, the worker API over HTTP): the chunks
arrive in order, and a chunk over the limit is refused in the task with the runtime's message."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from outlast import streams
from tests.conftest import PROJECTS, SECRET_KEY, stop_process, wait_for
from tests.realtime.sse import auth


@pytest.fixture
def remote(make_runtime, tmp_path):
    runtime = make_runtime(project=None, extra_env={"OUTLAST_STREAM_MAX_CHUNK_BYTES": "1000"})
    env = {**os.environ, "OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": SECRET_KEY,
           "OUTLAST_TEST_SCRATCH": str(runtime.scratch), "OUTLAST_TASK_PASS_ENV": "OUTLAST_TEST_SCRATCH"}
    env.pop("OUTLAST_DATABASE_URL", None)
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "outlast.cli", "worker", "--project",
                                   str(PROJECTS / "realtime"), "--data-dir", str(tmp_path / "worker-data"),
                                   "--node-id", "remote-1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    client = runtime.client()
    try:
        tasks = f"{runtime.url}/api/v1/tasks"
        wait_for(lambda: any(t["id"] == "stream-tokens" for t in httpx.get(tasks, headers=auth(SECRET_KEY)).json()),
                 timeout=60, message="the worker to register the realtime project")
        yield client
    finally:
        stop_process(worker)


def test_a_remote_workers_task_streams_through_the_worker_api(remote):
    client = remote
    run = client.trigger("stream-tokens", {"count": 1000})
    assert [c.data for c in streams.read(run.id, "tokens", client=client)] == [f"token-{i}" for i in range(1000)]
    refused = client.poll(client.trigger("stream-refused", {"size": 2000}).id, timeout=60)
    assert "the limit is 1000 bytes" in refused.output["refused"]
