"""Durable waits end to end: real runtime, real task processes, real CRIU checkpoints.

A task that waits longer than its `checkpoint_after` is dumped with CRIU and its process is
gone; the run is WAITING with an image in the checkpoint store; when what it waits for is
complete the image is restored and the code continues on the same line with its state.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from outlast import RunStatus, wait
from outlast.wire import CreateTokenRequest
from tests.conftest import RuntimeProcess, wait_for
from tests.e2e._shared import lines, process_gone, shared_runtime_fixture

ENV = {"OUTLAST_CHECKPOINT_AFTER": "1"}
shared_runtime = shared_runtime_fixture(project="waits", slots=2, extra_env=ENV)


@pytest.fixture
def client(shared_runtime):
    return shared_runtime.client()


def data_dir(runtime: RuntimeProcess) -> Path:
    return Path(runtime.args[runtime.args.index("--data-dir") + 1])


def images(runtime: RuntimeProcess) -> list[Path]:
    return sorted((data_dir(runtime) / "checkpoints").rglob("*.tar.zst"))


def messages(client, run_id: str) -> list[str]:
    return [event.message for event in client.run_events(run_id) if event.kind == "status"]


def status_is(client, run_id: str, status: RunStatus):
    def check():
        run = client.retrieve_run(run_id)
        return run if run.status is status else None
    return check


def host_pid(runtime: RuntimeProcess, marker: str) -> int:
    path = runtime.scratch / f"{marker}.host-pid"
    return int(wait_for(lambda: path.exists() and path.read_text(), message=f"{path.name} to be written"))


def test_a_waiting_run_is_checkpointed_its_process_is_gone_and_it_resumes_with_its_state(
        make_runtime, store):
    runtime = make_runtime(project="waits", extra_env=ENV)
    client = runtime.client()
    handle = client.trigger("stateful-wait", {"marker": "state", "seconds": 10})
    pid = host_pid(runtime, "state")

    waiting = wait_for(status_is(client, handle.id, RunStatus.WAITING), timeout=60, message="the run to wait")
    assert waiting.status is RunStatus.WAITING
    assert process_gone(pid), "a checkpointed run holds no process while it waits"
    assert len(images(runtime)) == 1, "its image is in the checkpoint store"
    event = next(e for e in client.run_events(handle.id) if e.data.get("status") == "WAITING")
    assert event.data["checkpoint"]["mode"] == "criu"
    assert event.data["checkpoint"]["image_bytes"] > 50_000_000, "the 50 MB list is in the image"

    run = client.poll(handle.id, timeout=90)
    assert run.status is RunStatus.COMPLETED, messages(client, handle.id)
    assert run.attempts == 1, "a resume continues the same attempt"
    out = run.output
    assert out["counter"] == 2
    assert out["items"] == 50_000_000 // 28 and out["sum_ok"]
    assert out["file"] == "before the wait\nafter the wait\n", "the open temporary file survived"
    assert out["local"] == {"name": "state", "nested": [1, 2, {"three": 3}]}
    assert out["waited"] >= 10, "the wall clock counted the frozen time"
    assert out["pid"] == 1, "the task is PID 1 of its own PID namespace"
    assert any("checkpointed" in m for m in messages(client, handle.id))
    assert any("resumes" in m for m in messages(client, handle.id))
    wait_for(lambda: not images(runtime), timeout=10, message="the image of the finished run to be deleted")


def test_an_open_http_connection_pool_survives_a_checkpoint(shared_runtime, client):
    handle = client.trigger("http-across-wait", {"url": shared_runtime.url, "seconds": 3})
    run = client.poll(handle.id, timeout=60)
    assert run.status is RunStatus.COMPLETED, messages(client, handle.id)
    assert run.output == [200, 200]
    assert any("checkpointed" in m for m in messages(client, handle.id))


def test_a_wait_below_the_threshold_stays_in_the_process(client):
    handle = client.trigger("short-wait", {"seconds": 0.5})
    run = client.poll(handle.id, timeout=30)
    assert run.status is RunStatus.COMPLETED
    assert run.output >= 0.5
    assert not any("WAITING" in str(e.data.get("status")) for e in client.run_events(handle.id))


def test_a_sync_task_waits_in_blocking_form(shared_runtime, client):
    handle = client.trigger("sync-wait", {"marker": "sync", "seconds": 4})
    pid = host_pid(shared_runtime, "sync")
    wait_for(status_is(client, handle.id, RunStatus.WAITING), timeout=30, message="the sync task to wait")
    assert process_gone(pid)
    run = client.poll(handle.id, timeout=60)
    assert run.status is RunStatus.COMPLETED, messages(client, handle.id)
    assert run.output["waited"] >= 4
    assert run.output["child"] == 42


def test_a_token_completed_by_a_plain_http_post_to_its_url(shared_runtime, client):
    handle = client.trigger("approval", {"marker": "http-token"})
    token_file = shared_runtime.scratch / "http-token.token"
    token = json.loads(wait_for(lambda: token_file.exists() and token_file.read_text(), message="the token"))
    assert token["url"].startswith(shared_runtime.url)
    wait_for(status_is(client, handle.id, RunStatus.WAITING), timeout=30, message="the run to wait for its token")

    # A third party: no API key, only the URL.
    response = httpx.post(token["url"], json={"approved": True, "by": "ann"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "COMPLETED"
    run = client.poll(handle.id, timeout=60)
    assert run.status is RunStatus.COMPLETED, messages(client, handle.id)
    assert run.output == {"ok": True, "data": {"approved": True, "by": "ann"}, "timed_out": False}

    # The URL is the credential: a wrong secret finds nothing, and completing twice changes nothing.
    wrong = token["url"].rsplit("/", 1)[0] + "/not-the-secret"
    assert httpx.post(wrong, json={"approved": False}).status_code == 404
    again = httpx.post(token["url"], json={"approved": False})
    assert again.status_code == 200 and again.json()["output"] == {"approved": True, "by": "ann"}


def test_a_token_that_times_out_gives_a_timeout_result(client):
    handle = client.trigger("approval", {"marker": "timeout-token", "timeout": 3})
    run = client.poll(handle.id, timeout=60)
    assert run.status is RunStatus.COMPLETED, messages(client, handle.id)
    assert run.output == {"ok": False, "data": None, "timed_out": True}


def test_tokens_from_the_sdk_outside_a_task(client):
    token = client.create_token(CreateTokenRequest(timeout="1h", tags=["sdk"], idempotency_key="sdk-token-1"))
    again = client.create_token(CreateTokenRequest(timeout="1h", idempotency_key="sdk-token-1"))
    assert again.id == token.id and again.is_cached
    done = client.complete_token(token.id, {"value": 1})
    assert done.status == "COMPLETED" and done.output == {"value": 1}
    assert client.retrieve_waitpoint(token.id).output == {"value": 1}

    # The wait module outside a task goes through the API client too.
    other = wait.create_token(timeout="1h", tags=["outside"], client=client)
    assert f"/api/v1/waitpoints/tokens/{other.id}/callback/" in other.url
    wait.complete_token(other, {"value": 2}, client=client)
    assert client.retrieve_waitpoint(other.id).output == {"value": 2}


def test_trigger_and_wait_and_a_batch_with_a_failing_child(client):
    handle = client.trigger("parent", {"value": 7})
    run = client.poll(handle.id, timeout=90)
    assert run.status is RunStatus.COMPLETED, messages(client, handle.id)
    assert run.output["one"] == 14 and run.output["one_ok"]
    assert run.output["batch"] == [[True, 2, None], [False, None, "refusing 2"], [True, 6, None]]
    assert run.output["batch_ok"] is False
    children = client.list_runs(task="double", limit=100).data
    assert all(child.version == run.version for child in children), "children run their parent's version"


def test_a_batch_gives_its_results_in_the_order_of_its_items(client):
    run = client.poll(client.trigger("wide-batch", {"count": 12}).id, timeout=90)
    assert run.status is RunStatus.COMPLETED, messages(client, run.id)
    assert run.output == [n * 2 for n in range(12)]


def test_parallel_waits_with_gather(client):
    handle = client.trigger("parallel", {"seconds": 4})
    run = client.poll(handle.id, timeout=90)
    assert run.status is RunStatus.COMPLETED, messages(client, handle.id)
    assert run.output["first"] == 10 and run.output["second"] == "slow done"
    assert run.output["waited"] >= 4
    assert any("checkpointed" in m for m in messages(client, handle.id)), "it was frozen while the three waited"


def test_canceling_a_waiting_run_deletes_its_image(shared_runtime, client):
    before = set(images(shared_runtime))
    handle = client.trigger("approval", {"marker": "cancel-token"})
    wait_for(status_is(client, handle.id, RunStatus.WAITING), timeout=30, message="the run to wait")
    mine = wait_for(lambda: set(images(shared_runtime)) - before, message="its image")
    assert client.cancel_run(handle.id).status is RunStatus.CANCELED
    wait_for(lambda: not (set(images(shared_runtime)) & mine), timeout=10, message="the image to be deleted")
    assert client.retrieve_run(handle.id).status is RunStatus.CANCELED


def test_a_corrupt_image_starts_a_fresh_attempt_and_says_why(shared_runtime, client):
    before = set(images(shared_runtime))
    handle = client.trigger("approval", {"marker": "corrupt"})
    token_file = shared_runtime.scratch / "corrupt.token"
    wait_for(status_is(client, handle.id, RunStatus.WAITING), timeout=30, message="the run to wait")
    (image,) = wait_for(lambda: set(images(shared_runtime)) - before, message="its image")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # truncated, as a crash mid-copy would leave it

    token = json.loads(token_file.read_text())
    token_file.unlink()
    client.complete_token(token["id"], {"approved": True})
    # The restore fails; attempt 2 starts from the top and waits for a new token.
    second = json.loads(wait_for(lambda: token_file.exists() and token_file.read_text(), timeout=60,
                                 message="attempt 2 to create its token"))
    assert second["id"] != token["id"]
    run = client.retrieve_run(handle.id)
    assert run.attempts == 2
    assert any("RestoreFailed" in m for m in messages(client, handle.id)), messages(client, handle.id)
    client.complete_token(second["id"], {"approved": "again"})
    run = client.poll(handle.id, timeout=60)
    assert run.status is RunStatus.COMPLETED
    assert run.output["data"] == {"approved": "again"}


def test_without_criu_waits_keep_the_process_alive_and_say_so(make_runtime, store):
    runtime = make_runtime(project="waits", extra_env={**ENV, "OUTLAST_CHECKPOINTS": "off"})
    client = runtime.client()
    handle = client.trigger("sync-wait", {"marker": "alive", "seconds": 3})
    pid = host_pid(runtime, "alive")
    wait_for(status_is(client, handle.id, RunStatus.WAITING), timeout=30, message="the run to wait")
    assert not process_gone(pid), "kept alive while it waits"
    assert not images(runtime)
    run = client.poll(handle.id, timeout=60)
    assert run.status is RunStatus.COMPLETED, messages(client, handle.id)
    assert run.output["child"] == 42
    said = [m for m in messages(client, handle.id) if "NOT checkpointed" in m]
    assert said and "OUTLAST_CHECKPOINTS=off" in said[0]
    assert lines(runtime.log_path) and "NOT checkpointed" in runtime.log()
    health = httpx.get(runtime.url + "/api/v1/health").json()
    assert health["checkpoints"] == {"enabled": False,
                                     "reason": "checkpointing is switched off (OUTLAST_CHECKPOINTS=off)"}


def test_the_health_endpoint_says_checkpointing_is_on(shared_runtime):
    assert httpx.get(shared_runtime.url + "/api/v1/health").json()["checkpoints"] == {"enabled": True}
