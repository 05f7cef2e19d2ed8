"""The workloads, written once against `Target`; bench/targets.py adapts outlast and Celery to it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .common import CpuMeter, latency_summary


class Target:
    """One system under test. Every phase leaves it drained: nothing queued, nothing running."""

    key = ""  # "outlast-sqlite", "celery"
    label = ""  # column header
    batch_note = ""  # how "batch" is done, if not by a batch API

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def trigger_noop(self) -> None:
        """One no-op, one request, as an application would send it."""
        raise NotImplementedError

    def trigger_noops(self, count: int) -> None:
        """`count` no-ops at once (a batch)."""
        raise NotImplementedError

    def trigger_stamp(self, payload: dict) -> object:
        """One run of the task that reports its start time to `payload["udp_port"]`; returns its id."""
        raise NotImplementedError

    def mark(self) -> None:
        """Start of a phase: `wait_done` counts only what is triggered from now on."""

    def wait_done(self, expected: int, timeout: float) -> float:
        """Block until the `expected` runs triggered since `mark()` finished; time.time() of the last."""
        raise NotImplementedError

    def cpu_groups(self) -> dict[str, Callable[[], Iterable[int]]]:
        """Processes whose CPU use is worth reporting, by label."""
        return {}

    def latency_extras(self, samples: list[dict]) -> dict[str, float]:
        """Further figures about the latency samples (`handle`, and time.time() `before` the trigger call,
        when it `returned` and when the task `started`), e.g. from the system's own timestamps."""
        return {}


def drain_timeout(runs: int) -> float:
    return 60 + runs / 20  # generous: assumes at least 20 runs/s


@dataclass
class Settings:
    throughput_runs: int = 5000
    batch_size: int = 1000
    batch_requests: int = 5
    trigger_seconds: float = 2.0
    trigger_threads: int = 8
    latency_samples: int = 200
    latency_warmup: int = 20
    latency_pause: float = 0.05
    settle: float = 1.0  # idle pause between phases
    backlog_runs: int = 50_000  # queued at once, from empty (issue 19: claims must not slow down with a backlog)

    @classmethod
    def quick(cls) -> Settings:
        return cls(throughput_runs=1000, batch_requests=2, trigger_seconds=1.0, latency_samples=50,
                   latency_warmup=10, backlog_runs=10_000)

    @classmethod
    def smoke(cls) -> Settings:
        """A few runs per phase (tests/test_benchmarks.py): proves each phase works, measures nothing."""
        return cls(throughput_runs=20, batch_size=10, batch_requests=1, trigger_seconds=0.3, trigger_threads=2,
                   latency_samples=3, latency_warmup=1, settle=0.1, backlog_runs=30)


# --- phases ---------------------------------------------------------------------------------------


def latency(target: Target, settings: Settings) -> dict[str, float]:
    """Trigger -> task start on an idle system, one run at a time, with a pause between runs.

    Measured from the client's clock just before the trigger call to the task's own clock when its
    function starts (both time.time() on this machine); the task sends its timestamp by UDP, so the
    benchmark never polls the system while it measures.
    """
    samples: list[dict] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(30)
        port = sock.getsockname()[1]
        target.mark()
        total = settings.latency_warmup + settings.latency_samples
        for index in range(total):
            before = time.time()
            handle = target.trigger_stamp({"udp_port": port, "sample": index})
            returned = time.time()
            started = _receive(sock, index)
            if index >= settings.latency_warmup:
                samples.append({"handle": handle, "before": before, "returned": returned, "started": started})
            time.sleep(settings.latency_pause)
        target.wait_done(total, drain_timeout(total))
    summary = latency_summary([s["started"] - s["before"] for s in samples])
    summary["trigger_call_p50_ms"] = latency_summary([s["returned"] - s["before"] for s in samples])["p50_ms"]
    return {**summary, **target.latency_extras(samples)}


def _receive(sock: socket.socket, index: int) -> float:
    while True:
        try:
            data = sock.recv(256)
        except TimeoutError:
            raise TimeoutError(f"latency sample {index}: the task did not report its start within 30 s") from None
        sample, started = data.decode().split()
        if int(sample) == index:  # anything else is a late duplicate of an earlier sample
            return float(started)


def _trigger_noops(target: Target, runs: int, batch_size: int) -> None:
    for sent in range(0, runs, batch_size):
        target.trigger_noops(min(batch_size, runs - sent))


def throughput(target: Target, settings: Settings) -> dict[str, float]:
    """No-ops completed per second: from the first trigger to the last completion."""
    runs, size = settings.throughput_runs, settings.batch_size
    meter = CpuMeter(target.cpu_groups())
    target.mark()
    meter.start()
    first = time.time()
    _trigger_noops(target, runs, size)
    accepted = time.time()
    last = target.wait_done(runs, drain_timeout(runs))
    cpu = meter.stop()
    elapsed = last - first
    return {"runs": runs, "runs_per_s": runs / elapsed, "seconds": elapsed,
            "trigger_seconds": accepted - first, "cpu_seconds": cpu}


def backlog(target: Target, settings: Settings, no_backlog_runs_per_s: float | None) -> dict[str, float]:
    """No-ops completed per second while a backlog of `backlog_runs` waits: all of them are queued first (in
    batches, as fast as the system takes them), then the workers drain the queue. A claim that scans and
    sorts the backlog (stale planner statistics) makes this collapse; one that walks the index keeps it
    near the no-backlog rate (`vs_no_backlog`: this rate / the throughput phase's)."""
    runs, size = settings.backlog_runs, settings.batch_size
    target.mark()
    first = time.time()
    _trigger_noops(target, runs, size)
    queued = time.time()
    last = target.wait_done(runs, drain_timeout(runs))
    rate = runs / (last - first)
    result = {"runs": runs, "runs_per_s": rate, "seconds": last - first, "trigger_seconds": queued - first}
    if no_backlog_runs_per_s:
        result["vs_no_backlog"] = rate / no_backlog_runs_per_s
    return result


def trigger_rate(target: Target, settings: Settings, threads: int) -> dict[str, float]:
    """Single triggers accepted per second for `trigger_seconds`, from `threads` threads at once.

    The workers keep executing the runs meanwhile, as they would in production; the phase ends by
    waiting (untimed) for them all to finish.
    """
    counts = [0] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    stop_at = 0.0

    def loop(slot: int) -> None:
        barrier.wait()
        try:
            while time.monotonic() < stop_at:
                target.trigger_noop()
                counts[slot] += 1
        except BaseException as exc:  # reported below, after every thread has stopped
            errors.append(exc)

    workers = [threading.Thread(target=loop, args=(slot,), daemon=True) for slot in range(threads)]
    target.mark()
    for worker in workers:
        worker.start()
    start = time.monotonic()
    stop_at = start + settings.trigger_seconds
    barrier.wait()
    for worker in workers:
        worker.join(settings.trigger_seconds + 60)
    elapsed = time.monotonic() - start
    if errors:
        raise errors[0]
    total = sum(counts)
    target.wait_done(total, drain_timeout(total))
    return {"threads": threads, "triggers": total, "seconds": elapsed, "per_s": total / elapsed}


def batch_rate(target: Target, settings: Settings) -> dict[str, float]:
    """Items accepted per second, sending `batch_requests` batches of `batch_size` one after another."""
    target.mark()
    start = time.monotonic()
    for _ in range(settings.batch_requests):
        target.trigger_noops(settings.batch_size)
    elapsed = time.monotonic() - start
    total = settings.batch_requests * settings.batch_size
    target.wait_done(total, drain_timeout(total))
    return {"batch_size": settings.batch_size, "batches": settings.batch_requests, "items": total,
            "seconds": elapsed, "items_per_s": total / elapsed}


def run_all(target: Target, settings: Settings, log: Callable[[str], None]) -> dict[str, object]:
    """Every phase, in an order that keeps the latency phase on an idle, fresh system."""
    results: dict[str, object] = {}
    phases: list[tuple[str, Callable[[], dict]]] = [
        ("latency", lambda: latency(target, settings)),
        ("throughput", lambda: throughput(target, settings)),
        ("trigger_sequential", lambda: trigger_rate(target, settings, threads=1)),
        ("trigger_threads", lambda: trigger_rate(target, settings, threads=settings.trigger_threads)),
        ("trigger_batch", lambda: batch_rate(target, settings)),
        ("backlog", lambda: backlog(target, settings, results.get("throughput", {}).get("runs_per_s"))),
    ]
    for name, phase in phases:
        time.sleep(settings.settle)
        began = time.monotonic()
        results[name] = phase()
        log(f"  {target.label}: {name} done in {time.monotonic() - began:.1f}s: {_brief(results[name])}")
    return results


def _brief(result: dict) -> str:
    keys = ("p50_ms", "p99_ms", "runs_per_s", "per_s", "items_per_s")
    return ", ".join(f"{k}={result[k]:.1f}" for k in keys if k in result)
