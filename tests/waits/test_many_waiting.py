"""200 runs waiting at once: checkpointed they hold no memory; kept alive, each holds a process."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlast import RunStatus
from outlast.wire import BatchItem
from tests.conftest import wait_for

RUNS = 200


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants (task processes re-parent to the runtime)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


def hold_many(runtime) -> tuple[int, int]:
    """RSS of the runtime's tree before and while RUNS runs wait; the runs are canceled after."""
    client = runtime.client()
    baseline = tree_rss(runtime.process.pid)
    handles = client.batch_trigger([BatchItem(task="hold", payload={}) for _ in range(RUNS)]).runs

    def waiting() -> bool:
        return client.list_runs(status=["WAITING"], limit=RUNS).data.__len__() == RUNS

    wait_for(waiting, timeout=600, interval=1.0, message=f"{RUNS} runs to wait")
    during = tree_rss(runtime.process.pid)
    for handle in handles:
        client.cancel_run(handle.id)
    assert all(client.retrieve_run(h.id).status is RunStatus.CANCELED for h in handles[:5])
    return baseline, during


@pytest.mark.timeout(1200)  # 400 task processes started, 200 of them checkpointed
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # memory does not depend on the store
def test_checkpointed_waits_hold_no_memory_unlike_kept_alive_ones(make_runtime):
    checkpointed = make_runtime(project="waits", slots=4)
    baseline, during = hold_many(checkpointed)
    checkpointed_growth = during - baseline
    checkpointed.close()

    alive = make_runtime(project="waits", slots=4, extra_env={"OUTLAST_CHECKPOINTS": "off"})
    baseline, during = hold_many(alive)
    alive_growth = during - baseline

    per_run_alive = alive_growth / RUNS
    assert per_run_alive > 5 * 2**20, f"a kept-alive waiting run holds its process ({per_run_alive / 2**20:.1f} MB)"
    # Checkpointed: the same runs wait on disk, and the runtime's memory stays where it was.
    assert checkpointed_growth < 0.05 * alive_growth, (
        f"checkpointed: {checkpointed_growth / 2**20:.0f} MB more while {RUNS} runs wait, "
        f"kept alive: {alive_growth / 2**20:.0f} MB")
