"""A node that dies between claiming a checkpointed run and restoring it: the image is not orphaned,
another node restores it (same attempt, same state). Real CRIU, real S3 (moto), real processes.

The kill lands between the two steps for real: the claiming node's S3 endpoint is a socket that
accepts connections and never answers, so its fetch of the image hangs after the claim committed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from outlast import RunStatus
from tests.conftest import free_port, wait_for

CHECKPOINT_SOON = {"OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_CHECKPOINT_MIN_FREE_MB": "0"}


@pytest.fixture
def silent_s3(cluster) -> Iterator[str]:
    """An endpoint on the bridge that takes connections into its backlog and never answers them."""
    with socket.socket() as listener:
        listener.bind((cluster.bridge.host_address, free_port()))
        listener.listen(64)
        host, port = listener.getsockname()
        yield f"http://{host}:{port}"


def _messages(client, run_id: str) -> list[str]:
    return [e.message for e in client.run_events(run_id)]


def test_a_node_killed_after_claiming_a_checkpointed_run_leaves_it_to_another(cluster, silent_s3):
    node_a = cluster.start_node("node-a", project="waits", extra_env={**cluster.s3_env(), **CHECKPOINT_SOON})
    client = cluster.client()
    run_id = client.trigger("stateful-token", {"marker": "handover"}).id
    token_file = cluster.scratch / "handover.token"
    token = json.loads(wait_for(lambda: token_file.exists() and token_file.read_text(), timeout=60,
                                message="the token"))
    wait_for(lambda: client.retrieve_run(run_id).status is RunStatus.WAITING, timeout=60,
             message="the run to be checkpointed")
    assert any(e.kind == "status" and "criu" in json.dumps(e.data or {}) for e in client.run_events(run_id)), \
        _messages(client, run_id)
    node_a.stop()

    node_b = cluster.start_node("node-b", project="waits", extra_env={**cluster.s3_env(silent_s3), **CHECKPOINT_SOON})
    client.complete_token(token["id"], {"approved": True})
    wait_for(lambda: any("resumes on node-b" in m for m in _messages(client, run_id)), timeout=60,
             message="node-b to claim the run to restore it")
    node_b.kill()  # its fetch of the image hangs: the claim is committed, the restore never happens

    cluster.start_node("node-c", project="waits", extra_env={**cluster.s3_env(), **CHECKPOINT_SOON})
    run = client.poll(run_id, interval=0.2, timeout=120)
    messages = _messages(client, run_id)
    assert run.status is RunStatus.COMPLETED, messages
    assert run.attempts == 1, "the same attempt, restored from its image, not a retry"
    assert run.output == {"counter": 2, "sum": sum(n * n for n in range(200_000)), "data": {"approved": True}}
    assert any("node node-b was lost before it restored the checkpoint" in m for m in messages), messages
    assert any("resumes on node-c" in m for m in messages), messages
