"""Eight namespace inits checkpointed and restored at once through the Checkpointer (real CRIU, a real
local store with its page pool): every dump, put and restore succeeds, and every process goes on with
its own state. Dumps of a fork server's children once collided in criu's parasite ("Can't create a
directory (-17)"): it mounts /proc at `proc.crtools` in the process's cwd, so each child (like each
runtime task process while it is dumped) sits in a directory of its own."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from outlast.runtime.checkpoint.checkpointer import Checkpointer, criu_concurrency
from outlast.runtime.checkpoint.store import LocalCheckpointStore
from tests.criu.fork_parent import fork_children
from tests.criu.test_criu import kill, require_criu, subreaper, ticks, wait_for  # noqa: F401 - subreaper: fixture

PARALLEL = 8


def digests(log: Path) -> list[str]:
    return re.findall(r"^digest ([0-9a-f]{64})$", log.read_text(), re.M)


def at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(0..count-1)` in `count` threads released together; their results (or exceptions)."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def one(n: int) -> None:
        start.wait()
        try:
            results[n] = work(n)
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_eight_dumps_and_restores_at_once_keep_every_process_state(tmp_path: Path) -> None:
    require_criu()
    store = LocalCheckpointStore(tmp_path / "store")
    checkpointer = Checkpointer(store, tmp_path / "scratch", tmp_path / "processes", concurrency=PARALLEL)
    server, children = fork_children(PARALLEL, tmp_path)
    pids: list[int | None] = [pid for pid, _ in children]
    logs = [log for _, log in children]
    try:
        for log in logs:
            wait_for(lambda log=log: len(ticks(log)) >= 3, "the child to tick")
        before = [digests(log) for log in logs]
        assert len({d[0] for d in before}) == PARALLEL, "each child has state of its own"

        def checkpoint(n: int) -> int:
            pid = pids[n]
            assert pid is not None
            image = checkpointer.dump(pid)
            try:
                checkpointer.store_image(image, f"run_{n}/1")
            finally:
                checkpointer.discard(image)
            return len(ticks(logs[n]))

        dumped = at_once(PARALLEL, checkpoint)
        failures = [r for r in dumped if isinstance(r, Exception)]
        assert not failures, failures
        pids = [None] * PARALLEL  # criu ended and reaped them
        assert not list((tmp_path / "scratch").glob("dump-*")), "nothing left in scratch"

        def restore(n: int) -> int:
            return checkpointer.restore(f"run_{n}/1", f"process-{n}", tmp_path / "control.sock")

        restored = at_once(PARALLEL, restore)
        failures = [r for r in restored if isinstance(r, Exception)]
        assert not failures, failures
        pids = list(restored)
        for n, (pid, log) in enumerate(zip(pids, logs, strict=True)):
            wait_for(lambda log=log, n=n: len(ticks(log)) >= dumped[n] + 3, "ticks after the restore")
            os.kill(pid, signal.SIGUSR1)
            wait_for(lambda log=log, n=n: len(digests(log)) > len(before[n]), "the digest after the restore")
            after = ticks(log)
            assert after == list(range(1, len(after) + 1)), f"child {n} went on counting from where it was dumped"
            assert digests(log)[-1] == before[n][0], f"child {n} has its own state back"
    finally:
        for pid in pids:
            kill(pid)
        server.send_signal(signal.SIGKILL)
        server.wait()


def test_concurrency_is_one_per_cpu_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTLAST_CHECKPOINT_CONCURRENCY", raising=False)
    assert criu_concurrency() == os.cpu_count()
    monkeypatch.setenv("OUTLAST_CHECKPOINT_CONCURRENCY", "5")
    assert criu_concurrency() == 5
    for bad in ("0", "many"):
        monkeypatch.setenv("OUTLAST_CHECKPOINT_CONCURRENCY", bad)
        with pytest.raises(ValueError, match="OUTLAST_CHECKPOINT_CONCURRENCY"):
            criu_concurrency()


def test_a_dump_a_dead_supervisor_left_running_is_waited_for_and_its_survivor_ended(tmp_path: Path) -> None:
    """What a starting supervisor does before deleting an unmarked dump: wait for the criu still writing
    it (here a stand-in with criu's arguments), then end the process it dumped if that survived, and
    only if it sits in the process directory (its PID may belong to another process by now)."""
    import subprocess
    import sys
    import time

    from outlast.runtime.checkpoint.criu import settle_orphaned_dump

    process_dir, images = tmp_path / "processes", tmp_path / "scratch" / "dump-1"
    (process_dir / "p1").mkdir(parents=True)
    images.mkdir(parents=True)
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=process_dir / "p1")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path)
    stand_ins = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)", "dump", "-t", str(pid),
                                   "-D", str(images)]) for pid in (survivor.pid, bystander.pid)]
    try:
        time.sleep(0.3)  # both stand-ins are running
        settle_orphaned_dump(images, process_dir)
        assert all(s.poll() is not None for s in stand_ins), "it waited for the dumps to end"
        assert survivor.wait(10) == -signal.SIGKILL
        assert bystander.poll() is None, "a process outside the process directory is left alone"
    finally:
        for process in (survivor, bystander, *stand_ins):
            process.kill()
            process.wait()
