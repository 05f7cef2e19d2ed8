"""A run checkpointed on one node resumes on another: shared PostgreSQL and an S3 bucket (moto's server)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import boto3
import pytest

from outlast import RunStatus
from tests.conftest import (
    PG_ADMIN_URL,
    S3_ENV,
    _create_pg_database,
    _drop_pg_database,
    moto_s3,
    runtime_process,
    wait_for,
)
from tests.e2e._shared import process_gone

BUCKET = "outlast-waits"


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint

@pytest.fixture
def database_url() -> Iterator[str]:
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _drop_pg_database(name)


def stored_objects(endpoint: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    return [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def stored_images(endpoint: str) -> list[str]:
    """The images' archives (their pages are in shared packs beside them, see checkpoint/s3pages.py)."""
    return [key for key in stored_objects(endpoint) if key.endswith(".tar.zst")]


def test_a_run_checkpointed_on_one_node_is_restored_by_another(tmp_path, s3_endpoint, database_url):
    processes = tmp_path / "processes"  # the same path on every node, as the runtime requires
    env = {"OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_CHECKPOINT_STORE": f"s3://{BUCKET}/checkpoints",
           "OUTLAST_S3_ENDPOINT_URL": s3_endpoint, "OUTLAST_PROCESS_DIR": str(processes), **S3_ENV}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    node_a = runtime_process(tmp_path / "a", database_url, project="waits", node_id="node-a", extra_env=env)
    node_b = runtime_process(tmp_path / "b", database_url, project="waits", node_id="node-b", extra_env=env)
    try:
        node_a.start()
        client = node_a.client()
        handle = client.trigger("stateful-token", {"marker": "moved"})
        token_file = node_a.scratch / "moved.token"
        token = json.loads(wait_for(lambda: token_file.exists() and token_file.read_text(), message="the token"))
        pid = int((node_a.scratch / "moved.host-pid").read_text())
        wait_for(lambda: client.retrieve_run(handle.id).status is RunStatus.WAITING, timeout=30,
                 message="the run to be checkpointed")
        assert process_gone(pid)
        assert len(stored_images(s3_endpoint)) == 1, "the image went to the bucket"

        node_a.stop()
        shutil.rmtree(processes)  # node B is another machine: nothing of node A's is on its disk
        node_b.start()
        other = node_b.client()
        other.complete_token(token["id"], {"approved": True})
        run = other.poll(handle.id, timeout=60)
        assert run.status is RunStatus.COMPLETED, [e.message for e in other.run_events(handle.id)]
        assert run.attempts == 1
        assert run.output == {"counter": 2, "sum": sum(n * n for n in range(200_000)), "data": {"approved": True}}
        events = [e.message for e in other.run_events(handle.id)]
        assert any("started on node-a" in m for m in events)
        assert any("resumes on node-b" in m for m in events), events
        wait_for(lambda: not stored_images(s3_endpoint), timeout=10, message="the used image to be deleted")
        # Its own pages went with it; the version's stay for its next runs, referenced by the version alone.
        pages = [key for key in stored_objects(s3_endpoint) if "/.pages/" in key]
        packs = [key for key in pages if "/.pages/packs/" in key]
        refs = [key for key in pages if "/.pages/refs/" in key]
        assert packs and len(refs) == len(packs) and all("/@version/" in key for key in refs), pages
        assert not [key for key in pages if "/.pages/keys/" in key or "/.pages/condemned/" in key], pages
    finally:
        node_a.close()
        node_b.close()
