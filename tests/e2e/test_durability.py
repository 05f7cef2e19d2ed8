"""A runtime killed with SIGKILL and restarted loses no accepted trigger and completes every run once."""

from __future__ import annotations

import threading
import time
from collections import Counter

from outlast import OutlastError, RunStatus, trigger_options
from outlast.wire import BatchItem
from tests.conftest import wait_for
from tests.e2e._shared import lines, process_gone


class Triggerer(threading.Thread):
    """Triggers `counted` runs one after another until stopped; keeps the handles the runtime accepted."""

    def __init__(self, client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.accepted: list[str] = []
        self.refused = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.accepted.append(self.client.trigger("counted", {"seconds": 0.05}).id)
            except OutlastError:
                self.refused += 1  # the runtime is down: this trigger was never accepted
                time.sleep(0.05)


def test_sigkill_mid_load_loses_no_trigger_and_completes_each_run_once(make_runtime):
    runtime = make_runtime(slots=2)
    client = runtime.client()
    batch = client.batch_trigger([BatchItem(task="counted", payload={"seconds": 0.2}) for _ in range(40)])
    triggerer = Triggerer(runtime.client())
    triggerer.start()
    completed = runtime.scratch / "completed"
    wait_for(lambda: len(lines(completed)) >= 5, message="some runs to complete before the kill")

    runtime.kill()
    time.sleep(0.5)  # triggers sent now fail: the runtime did not accept them
    runtime.start()
    accepted_before_restart = len(triggerer.accepted)
    wait_for(lambda: len(triggerer.accepted) >= accepted_before_restart + 5, message="triggers after the restart")
    triggerer.stopped.set()
    triggerer.join(30)
    assert triggerer.refused > 0, "the triggerer kept triggering while the runtime was down"

    accepted = [h.id for h in batch.runs] + triggerer.accepted
    for run_id in accepted:
        client.poll(run_id, interval=0.2, timeout=90)
    stored = {run.id: run for run in client.iter_runs(task="counted", limit=500)}
    # Every accepted trigger is there. At most one more: the trigger in flight at the kill, which the
    # runtime committed but could not answer (its client saw an error).
    assert set(accepted) <= set(stored)
    assert len(set(stored) - set(accepted)) <= 1
    runs = {run_id: client.poll(run_id, interval=0.2, timeout=90) for run_id in stored}

    successes: Counter[tuple[str, int]] = Counter()
    for line in lines(completed):
        run_id, attempt = line.split()
        successes[(run_id, int(attempt))] += 1
    # Every run completed, and the attempt the runtime recorded as the successful one really ran, once.
    for run_id, run in runs.items():
        assert run.status is RunStatus.COMPLETED, (run_id, run.status, run.error)
        assert successes[(run_id, run.attempts)] == 1, (run_id, run.attempts)
        assert run.output == run.attempts
    # No attempt ran twice, and nothing ran a run again after it was recorded as completed.
    assert [key for key, count in successes.items() if count > 1] == []
    assert [(run_id, attempt) for run_id, attempt in successes
            if run_id not in runs or attempt > runs[run_id].attempts] == []
    # A run executes again only when the kill caught it in flight (running, or finished but not yet
    # recorded): the restarted runtime ended that attempt as crashed, and the timeline says why.
    repeated = [run_id for run_id, run in runs.items() if run.attempts > 1]
    assert len(repeated) < len(runs) // 4, repeated
    for run_id in repeated:
        events = client.run_events(run_id)
        crash = [e for e in events if e.kind == "status" and e.attempt == 1 and "crashed" in e.message]
        assert crash and "restarted" in crash[0].message, [e.message for e in events]


def test_an_attempt_interrupted_by_a_runtime_kill_is_retried_after_restart(make_runtime):
    runtime = make_runtime(slots=2)
    client = runtime.client()
    handle = client.trigger("long-first-attempt", {"seconds": 60})
    marker = runtime.scratch / f"long-{handle.id}"
    started = wait_for(lambda: [line for line in lines(marker) if line.startswith("start 1")],
                       message="attempt 1 to start")
    pid = int(started[0].split()[2])

    runtime.kill()
    # The orphaned task process notices that its supervisor is gone and stops running the attempt
    # (its finally block runs), instead of running on beside the retry.
    wait_for(lambda: process_gone(pid), timeout=20, message="the orphaned task process to exit")
    assert "finally 1" in lines(marker)
    assert "done 1" not in lines(marker)

    runtime.start()
    run = client.poll(handle.id, interval=0.2, timeout=60)
    assert run.status is RunStatus.COMPLETED
    assert run.attempts == 2
    assert run.output == 2
    events = client.run_events(handle.id)
    assert any("attempt 1 crashed" in e.message and "restarted" in e.message for e in events), \
        [e.message for e in events]
    assert lines(marker)[-1] == "done 2"


def test_delayed_and_queued_runs_survive_a_kill(make_runtime):
    runtime = make_runtime(slots=1)
    client = runtime.client()
    blocker = client.trigger("gate", {"name": "hold"})
    wait_for(lambda: (runtime.scratch / "gate-hold").exists(), message="the blocker to take the only slot")
    queued = [client.trigger("counted", {"seconds": 0}) for _ in range(3)]
    delayed = client.trigger("counted", {"seconds": 0}, trigger_options(delay=2))
    assert client.retrieve_run(delayed.id).status is RunStatus.DELAYED

    runtime.kill()
    (runtime.scratch / "open-hold").touch()
    runtime.start()
    for handle in [*queued, delayed, blocker]:
        run = client.poll(handle.id, interval=0.2, timeout=60)
        assert run.status is RunStatus.COMPLETED, (handle.id, run.status, run.error)
    assert sorted(line.split()[0] for line in lines(runtime.scratch / "completed")) == \
        sorted(h.id for h in [*queued, delayed])
