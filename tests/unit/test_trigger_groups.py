"""Group commit of single triggers (engine/trigger_groups.py), its leader/follower hand-over alone.

The writer is a stand-in that records the groups and can be held inside its "transaction", so
which calls share one is decided by the test, not by timing.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from outlast.runtime.engine.trigger_groups import TriggerGroups
from outlast.wire import BatchItem, RunHandle
from tests.conftest import wait_for


class Writer:
    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.inside = threading.Event()

    def __call__(self, calls) -> None:
        self.inside.set()
        self.hold.wait(10)
        self.groups.append([f"{c.env_id}/{c.item.task}" for c in calls])
        for call in calls:
            if call.item.task == "refused":
                call.error = ValueError(f"{call.item.task} refused")
            elif call.item.task == "writer-fails":
                raise RuntimeError("database away")
            else:
                call.handle = RunHandle(id=f"run-{call.item.task}", task=call.item.task)


def test_calls_that_come_while_a_group_commits_share_the_next_transaction_each_with_its_own_answer():
    writer = Writer()
    groups = TriggerGroups(writer, wait=0)
    writer.hold.clear()
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(groups.trigger, "dev", BatchItem(task="a"))
        assert writer.inside.wait(10)  # "a" leads, alone, and is inside its transaction
        later: dict[str, Future] = {task: pool.submit(groups.trigger, env, BatchItem(task=task))
                                    for env, task in [("dev", "b"), ("dev", "refused"), ("dev", "c"), ("prod", "d")]}
        # prod's call leads a group of its own at once (it waits in the held writer); dev's three queue.
        wait_for(lambda: len(groups._pending) == 3 and len(groups._leading) == 2, message="three dev calls waiting")
        writer.hold.set()
        assert first.result().id == "run-a"
        assert [later[t].result().id for t in "bcd"] == ["run-b", "run-c", "run-d"]
        with pytest.raises(ValueError, match="refused refused"):
            later["refused"].result()
    # One transaction per environment: the three dev calls that waited together, prod's apart.
    assert sorted(map(sorted, writer.groups)) == [["dev/a"], ["dev/b", "dev/c", "dev/refused"], ["prod/d"]]
    assert (groups.groups, groups.calls) == (3, 5)


def test_a_failed_transaction_is_the_answer_of_every_call_in_it_and_the_next_leader_goes_on():
    writer = Writer()
    groups = TriggerGroups(writer, wait=0)
    with pytest.raises(RuntimeError, match="database away"):
        groups.trigger("dev", BatchItem(task="writer-fails"))
    assert groups.trigger("dev", BatchItem(task="a")).id == "run-a"


def test_a_group_is_never_larger_than_max_group():
    writer = Writer()
    groups = TriggerGroups(writer, max_group=3, wait=0)
    writer.hold.clear()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(groups.trigger, "dev", BatchItem(task="first"))]
        assert writer.inside.wait(10)
        futures += [pool.submit(groups.trigger, "dev", BatchItem(task=f"t{n}")) for n in range(7)]
        wait_for(lambda: len(groups._pending) == 7, message="seven calls waiting")
        writer.hold.set()
        assert all(isinstance(f.result(), RunHandle) for f in futures)
    assert max(map(len, writer.groups)) == 3 and sum(map(len, writer.groups)) == 8

