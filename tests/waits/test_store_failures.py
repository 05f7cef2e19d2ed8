"""A checkpoint store that is full or refusing never loses a run (real runtime, real CRIU).

Once `criu dump` returned the process is gone and lives only in its image in scratch: if the
store then refuses the image, the process is restored from scratch at once and waits on in
memory; a node whose store keeps failing stops checkpointing and says so in its health.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from outlast import RunStatus
from tests.conftest import S3_ENV, moto_s3, wait_for
from tests.waits.test_waits import messages

BUCKET = "outlast-refusing"


@pytest.fixture
def tiny_store(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs as the checkpoint store: every image overflows it (ENOSPC)."""
    where = tmp_path / "tiny-store"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def trigger_waits(client, count: int, marker: str) -> list[str]:
    return [client.trigger("stateful-wait", {"marker": f"{marker}-{n}", "items": 20_000, "seconds": 3,
                                             "name": f"{marker}-{n}"}).id for n in range(count)]


def assert_each_finished_once_with_its_state(client, run_ids: list[str], marker: str) -> None:
    for n, run_id in enumerate(run_ids):
        run = client.poll(run_id, timeout=120)
        assert run.status is RunStatus.COMPLETED, messages(client, run_id)
        assert run.attempts == 1, "it went on in memory: the same attempt"
        assert run.output["counter"] == 2 and run.output["sum_ok"]
        assert run.output["file"] == "before the wait\nafter the wait\n"
        assert run.output["local"]["name"] == f"{marker}-{n}"


def test_a_full_store_keeps_every_run_in_memory_and_checkpointing_stops(make_runtime, tiny_store):
    runtime = make_runtime(project="waits", extra_env={
        "OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_CHECKPOINT_STORE": str(tiny_store),
        "OUTLAST_CHECKPOINT_MIN_FREE_MB": "0", "OUTLAST_CHECKPOINT_STORE_TRIES": "2"})
    client = runtime.client()
    run_ids = trigger_waits(client, 4, "full")
    assert_each_finished_once_with_its_state(client, run_ids, "full")
    said = [m for run_id in run_ids for m in messages(client, run_id)]
    assert any("could not be stored" in m and "No space left" in m for m in said), said
    health = httpx.get(runtime.url + "/api/v1/health").json()["checkpoints"]
    assert health["enabled"] is False and "times in a row" in health["reason"], health
    assert "checkpointing paused" in runtime.log()
    assert not list(tiny_store.rglob("*.tar.zst"))


def test_too_little_free_space_skips_the_checkpoint_and_says_why(make_runtime, tiny_store):
    runtime = make_runtime(project="waits", extra_env={
        "OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_CHECKPOINT_STORE": str(tiny_store)})
    client = runtime.client()
    run_ids = trigger_waits(client, 1, "space")
    assert_each_finished_once_with_its_state(client, run_ids, "space")
    said = messages(client, run_ids[0])
    assert any("not enough disk space" in m for m in said), said
    assert not any("could not be stored" in m for m in said), "no dump was tried"


def test_an_s3_store_refusing_puts_keeps_the_runs(make_runtime):
    with moto_s3(BUCKET) as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.delete_bucket(Bucket=BUCKET)  # every put now answers NoSuchBucket
        runtime = make_runtime(project="waits", extra_env={
            "OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_CHECKPOINT_STORE": f"s3://{BUCKET}/checkpoints",
            "OUTLAST_S3_ENDPOINT_URL": endpoint, "OUTLAST_CHECKPOINT_STORE_TRIES": "2", **S3_ENV})
        client = runtime.client()
        run_ids = trigger_waits(client, 2, "s3")
        assert_each_finished_once_with_its_state(client, run_ids, "s3")
        said = [m for run_id in run_ids for m in messages(client, run_id)]
        assert any("could not be stored" in m for m in said), said
        wait_for(lambda: httpx.get(runtime.url + "/api/v1/health").json()["checkpoints"]["enabled"], timeout=1,
                 message="checkpointing still on after two failures (it stops after three)")


def test_a_supervisor_killed_between_dump_and_store_is_finished_by_the_next(make_runtime, tmp_path):
    runtime = make_runtime(project="waits", extra_env={
        "OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_TEST_PAUSE_AFTER_DUMP": "120"})
    client = runtime.client()
    (run_id,) = trigger_waits(client, 1, "killed")
    scratch = tmp_path / "data" / "scratch"
    wait_for(lambda: list(scratch.glob("dump-*.json")), timeout=60, message="the dump to be marked pending")
    runtime.kill()  # the process is gone (dumped), its image only in scratch, the run EXECUTING
    del runtime.env["OUTLAST_TEST_PAUSE_AFTER_DUMP"]
    runtime.start()
    assert_each_finished_once_with_its_state(client, [run_id], "killed")
    assert any("committed the checkpoint its previous supervisor left" in line for line in runtime.log().splitlines())
    assert not list(scratch.glob("dump-*")), "nothing left half done in scratch"
