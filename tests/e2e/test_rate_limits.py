"""Rate limits across two runtimes on one PostgreSQL database: together they never start more than the limit
in any period; the queue's API shows the limit, a held-back run's timeline says why, bad limits get a 422."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from outlast import RunStatus
from outlast.wire import BatchItem
from tests.conftest import PG_ADMIN_URL, SECRET_KEY, _create_pg_database, _drop_pg_database, runtime_process

LIMIT, PERIOD = 3, 2.0
RATED = {"name": "rated", "rate_limit": {"limit": LIMIT, "period": PERIOD}}


@pytest.fixture
def shared_database() -> Iterator[str]:
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _drop_pg_database(name)


def test_two_runtimes_together_start_at_most_the_limit_per_period(tmp_path, shared_database):
    fast_poll = {"OUTLAST_POLL_INTERVAL": "0.1"}
    runtimes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        # One slot each and attempts of 0.5 s: a replica cannot start a whole period's runs alone, so
        # both claim whatever the timing (with idle slots to spare, either could take them all).
        runtimes.append(runtime_process(tmp_path / name, shared_database, node_id=f"node-{name}", slots=1,
                                        extra_env=fast_poll).start())
    try:
        client = runtimes[0].client()
        batch = client.batch_trigger([BatchItem(task="sleeper", payload={"i": i, "seconds": 0.5},
                                                options={"queue": RATED}) for i in range(9)])
        runs = [client.poll(handle.id, interval=0.2, timeout=60) for handle in batch.runs]
        assert {run.status for run in runs} == {RunStatus.COMPLETED}
        starts = sorted(run.started_at.timestamp() for run in runs)
        in_any_period = max(sum(1 for t in starts if first <= t < first + PERIOD - 1e-6) for first in starts)
        assert in_any_period == LIMIT, starts
        nodes = {e.message.rsplit(" ", 1)[-1] for run in runs for e in client.run_events(run.id)
                 if e.message.startswith("attempt 1 started on")}
        assert nodes == {"node-a", "node-b"}  # both replicas claimed: the limit held across them
        reasons = [e for run in runs for e in client.run_events(run.id) if e.kind == "rate_limited"]
        assert len(reasons) >= LIMIT * 2 and "rate limit of queue 'rated' (3 per 2s)" in reasons[0].message

        queue = runtimes[1].client().queues.retrieve("rated")
        assert (queue.rate_limit.limit, queue.rate_limit.period, queue.rate_limit.burst) == (LIMIT, PERIOD, 1)
        assert (queue.running, queue.queued, queue.rate_limited) == (0, 0, 0)
        assert "task/noop" in {q.name for q in client.queues.list()}

        bad = httpx.post(f"{runtimes[0].url}/api/v1/tasks/noop/trigger", headers={
            "Authorization": f"Bearer {SECRET_KEY}"}, json={"payload": {}, "options": {
                "queue": {"name": "rated", "rate_limit": {"limit": 3, "period": -1}}}})
        assert bad.status_code == 422, bad.text
        assert "rate_limit.period" in bad.text
    finally:
        for runtime in runtimes:
            runtime.close()
