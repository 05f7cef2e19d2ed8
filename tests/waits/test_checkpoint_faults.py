"""Two fault paths after `criu dump` ended the process (real runtime, real CRIU, real store):

- the store refuses the image and restoring the process from its image in scratch fails too
  (CheckpointLost): the run gets a fresh attempt, says why, and finishes once;
- the store accepted the image, then the runtime refused the suspend report: the stored image is
  dropped, the process is restored from scratch at once and waits on in memory; the run finishes
  once, in its first attempt, with its state.

The faults are real ones: a read-only filesystem as the store, an image file deleted in scratch
while the supervisor is held between dump and store (OUTLAST_TEST_PAUSE_AFTER_DUMP), and a worker
node whose runtime answers its checkpoint report with a 409 (through an HTTP proxy in front of the
runtime that refuses exactly that call).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from outlast import RunStatus
from tests.conftest import PROJECTS, SECRET_KEY, stop_process, wait_for
from tests.waits.test_store_failures import assert_each_finished_once_with_its_state, trigger_waits
from tests.waits.test_waits import messages


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs as the checkpoint store: every put fails (EROFS), whatever the image's size."""
    where = tmp_path / "read-only-store"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=4m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def every_message(client, run_id: str) -> list[str]:
    return [event.message for event in client.run_events(run_id)]


def test_a_dump_neither_stored_nor_restored_gets_a_fresh_attempt(make_runtime, read_only_store, tmp_path):
    runtime = make_runtime(project="waits", extra_env={
        "OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_CHECKPOINT_STORE": str(read_only_store),
        "OUTLAST_CHECKPOINT_MIN_FREE_MB": "0", "OUTLAST_CHECKPOINT_STORE_TRIES": "1",
        "OUTLAST_TEST_PAUSE_AFTER_DUMP": "3"})
    client = runtime.client()
    (run_id,) = trigger_waits(client, 1, "lost")
    scratch = tmp_path / "data" / "scratch"
    pending = wait_for(lambda: next(iter(scratch.glob("dump-*.json")), None), timeout=60,
                       message="the first dump to be marked pending")
    # The process lives only in this image now: without its inventory criu cannot restore it.
    (pending.with_suffix("") / "inventory.img").unlink()

    run = client.poll(run_id, timeout=180)
    assert run.status is RunStatus.COMPLETED, messages(client, run_id)
    assert run.attempts == 2, "the lost attempt was replaced by one fresh attempt, and only one"
    assert run.output["counter"] == 2 and run.output["sum_ok"]
    assert run.output["file"] == "before the wait\nafter the wait\n"
    said = every_message(client, run_id)
    assert any("restoring it from its dump failed too" in m for m in said), said
    assert any("could not be stored" in m for m in said), said
    assert not list(scratch.glob("dump-*")), "nothing left half done in scratch"


class RefuseCheckpointReports(http.server.BaseHTTPRequestHandler):
    """Forwards to the runtime; answers 409 to a worker's report that it checkpointed a run (CRIU)."""

    upstream = ""
    refused: list[str] = []

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.endswith("/worker/suspend") and json.loads(body or b"{}").get("mode") == "criu":
            type(self).refused.append(json.loads(body)["run_id"])
            self._answer(409, b'{"error": "conflict", "message": "refused by the test proxy"}', "application/json")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        upstream = httpx.request(self.command, self.upstream + self.path, content=body, headers=headers, timeout=60)
        self._answer(upstream.status_code, upstream.content, upstream.headers.get("content-type", ""))

    def _answer(self, status: int, content: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_proxy(make_runtime) -> Iterator[tuple[str, object, type[RefuseCheckpointReports]]]:
    runtime = make_runtime(project=None)
    handler = type("Handler", (RefuseCheckpointReports,), {"upstream": runtime.url, "refused": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", runtime, handler
    server.shutdown()


@pytest.fixture
def worker_through(refusing_proxy, tmp_path) -> Iterator[Path]:
    proxy_url, runtime, _ = refusing_proxy
    data = tmp_path / "worker-data"
    env = {**os.environ, "OUTLAST_API_URL": proxy_url, "OUTLAST_SECRET_KEY": SECRET_KEY,
           "OUTLAST_TEST_SCRATCH": str(runtime.scratch), "OUTLAST_TASK_PASS_ENV": "OUTLAST_TEST_SCRATCH",
           "OUTLAST_HEARTBEAT_INTERVAL": "0.5", "OUTLAST_CHECKPOINT_AFTER": "1"}
    env.pop("OUTLAST_DATABASE_URL", None)
    with (tmp_path / "worker.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "outlast.cli", "worker", "--project",
                                    str(PROJECTS / "waits"), "--data-dir", str(data), "--node-id", "refused-1"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield data
    finally:
        stop_process(process)


def test_a_stored_checkpoint_the_runtime_refuses_goes_on_in_memory(refusing_proxy, worker_through, tmp_path):
    _, runtime, handler = refusing_proxy
    client = runtime.client()
    tasks = f"{runtime.url}/api/v1/tasks"
    wait_for(lambda: any(t["id"] == "stateful-wait" for t in httpx.get(
        tasks, headers={"Authorization": f"Bearer {SECRET_KEY}"}, timeout=10).json()), timeout=60,
        message="the worker to register the waits project")
    run_ids = trigger_waits(client, 2, "refused")
    assert_each_finished_once_with_its_state(client, run_ids, "refused")
    assert sorted(set(handler.refused)) == sorted(run_ids), "each run's checkpoint was stored, then refused"
    said = [m for run_id in run_ids for m in every_message(client, run_id)]
    assert any("could not hand its checkpoint to the runtime" in m for m in said), said
    worker_log = (tmp_path / "worker.log").read_text()
    assert "was checkpointed but not suspended" in worker_log, worker_log[-3000:]
    left = [p for p in (worker_through / "checkpoints").rglob("*") if any(run_id in str(p) for run_id in run_ids)
            and p.is_file()]
    assert not left, f"the images the runtime refused are deleted from the store: {left}"
