"""Dequeue order and limits: queue concurrency limits, concurrency keys, priority, fairness across keys."""

from __future__ import annotations

from pathlib import Path

from outlast import RunStatus, trigger_options
from outlast.wire import BatchItem
from tests.conftest import wait_for
from tests.e2e._shared import lines


def _spans(path: Path, key_field: int) -> dict[str, tuple[str, float, float]]:
    """run id -> (key, start, end) from "start|end <key> <run id> <time>" lines."""
    starts, spans = {}, {}
    for line in lines(path):
        parts = line.split()
        kind, key, run_id, when = parts[0], parts[key_field], parts[-2], float(parts[-1])
        if kind == "start":
            starts[run_id] = (key, when)
        else:
            spans[run_id] = (starts[run_id][0], starts[run_id][1], when)
    return spans


def _overlaps(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def _all_complete(client, handles, timeout: float = 60) -> None:
    for handle in handles:
        run = client.poll(handle.id, interval=0.1, timeout=timeout)
        assert run.status is RunStatus.COMPLETED, (handle.id, run.status, run.error)


def test_queue_concurrency_limit_lets_one_run_at_a_time(make_runtime):
    runtime = make_runtime(slots=3)
    client = runtime.client()
    handles = [client.trigger("one-at-a-time", {"seconds": 0.3}) for _ in range(4)]
    _all_complete(client, handles)
    events = []
    for line in lines(runtime.scratch / "limited"):
        kind, run_id, when = line.split()
        events.append((float(when), kind, run_id))
    assert sorted(r for _, kind, r in events if kind == "start") == sorted(h.id for h in handles)
    running = 0
    for _, kind, _run_id in sorted(events, key=lambda e: (e[0], e[1] == "start")):  # an end before a start
        running += 1 if kind == "start" else -1
        assert running <= 1, "two runs of a queue with concurrency_limit=1 overlapped"


def test_concurrency_keys_get_their_own_copy_of_the_limit(make_runtime):
    runtime = make_runtime(slots=3)
    client = runtime.client()
    # Spans long enough that a slot whose task process is still starting (slow on a loaded machine)
    # joins in before the other tenant's runs are all done.
    items = [BatchItem(task="keyed-span", payload={"tenant": tenant, "seconds": 1.5},
                       options=trigger_options(concurrency_key=tenant))
             for _ in range(3) for tenant in ("acme", "globex")]
    handles = client.batch_trigger(items).runs
    _all_complete(client, handles)
    spans = _spans(runtime.scratch / "spans", key_field=1)
    assert set(spans) == {h.id for h in handles}
    by_tenant: dict[str, list] = {}
    for span in spans.values():
        by_tenant.setdefault(span[0], []).append(span)
    for tenant, tenant_spans in by_tenant.items():
        for i, a in enumerate(tenant_spans):
            for b in tenant_spans[i + 1:]:
                assert not _overlaps(a, b), f"two runs of tenant {tenant} overlapped"
    assert any(_overlaps(a, b) for a in by_tenant["acme"] for b in by_tenant["globex"]), \
        "different concurrency keys must run in parallel"


def test_higher_priority_runs_first_when_slots_are_scarce(make_runtime):
    runtime = make_runtime(slots=1)
    client = runtime.client()
    blocker = client.trigger("gate", {"name": "hold"})
    wait_for(lambda: (runtime.scratch / "gate-hold").exists(), message="the blocker to take the only slot")
    low = [client.trigger("ordered", {"name": f"low{i}"}) for i in range(3)]
    high = client.trigger("ordered", {"name": "high"}, trigger_options(priority=10))
    negative = client.trigger("ordered", {"name": "negative"}, trigger_options(priority=-5))
    later = client.trigger("ordered", {"name": "low3"})
    (runtime.scratch / "open-hold").touch()
    _all_complete(client, [blocker, *low, high, negative, later])
    starts = lines(runtime.scratch / "starts")
    assert starts == ["gate-hold", "high", "low0", "low1", "low2", "low3", "negative"]


def test_a_burst_from_one_key_does_not_starve_another(make_runtime):
    runtime = make_runtime(slots=1)
    client = runtime.client()
    blocker = client.trigger("gate", {"name": "hold"})
    wait_for(lambda: (runtime.scratch / "gate-hold").exists(), message="the blocker to take the only slot")
    burst = client.batch_trigger([BatchItem(task="fair-work", payload={"tenant": "A"},
                                            options=trigger_options(concurrency_key="A")) for _ in range(30)]).runs
    single = client.trigger("fair-work", {"tenant": "B"}, trigger_options(concurrency_key="B"))
    (runtime.scratch / "open-hold").touch()
    _all_complete(client, [blocker, *burst, single])
    starts = [line for line in lines(runtime.scratch / "starts") if not line.startswith("gate-")]
    assert len(starts) == 31
    assert starts.index("B") < 3, f"B started after {starts.index('B')} runs of A's burst"
