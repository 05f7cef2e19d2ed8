"""Worker nodes as the engine knows them (engine/nodes.py): what `outlast worker drain` asks, on both stores."""

from __future__ import annotations

import pytest

from outlast.runtime.engine.nodes import NodeNotFound
from tests.test_engine import clock, database, engine, images  # noqa: F401 - the engine's fixtures


def test_a_drain_is_asked_of_the_nodes_current_process_within_its_environment(engine, clock):  # noqa: F811
    with pytest.raises(NodeNotFound, match="no worker node 'n1' has served environment 'dev' \\(known: none\\)"):
        engine.nodes.request_drain("dev", "n1")
    assert engine.nodes.seen("n1", "first", ["dev"]) is False
    asked = engine.nodes.request_drain("dev", "n1")
    assert asked.drain_requested_at is not None and not asked.draining and asked.attempts == 0
    with pytest.raises(NodeNotFound, match="known: none"):
        engine.nodes.get("prod", "n1")  # another environment's key does not see it
    with pytest.raises(NodeNotFound, match="known: n1"):
        engine.nodes.get("dev", "n2")

    clock.now += 1
    assert engine.nodes.seen("n1", "first", ["dev"]) is True, "its next heartbeat is told"
    assert engine.nodes.get("dev", "n1").draining
    clock.now += 1
    assert engine.nodes.seen("n1", "second", ["dev"]) is False, "a new process under the same id is not"
    assert engine.nodes.get("dev", "n1").drain_requested_at is None
