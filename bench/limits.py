"""What machine limits cost a task process and an attempt: the cgroup work the supervisor does.

Measures, on real cgroups of this host, each step for a real (sleeping) child process: making its
cgroup, moving it in, sizing it for an attempt (limits, peak reset, counters read), the next
attempt of the reused process on the same preset (peak reset and counters only), reading the
counters at the attempt's end, and removing the cgroup after the process exited. Medians and p99
in milliseconds. Needs root (or a delegated cgroup); prints a JSON line.

    python bench/limits.py [--count 200] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from outlast import _seccomp
from outlast._confine import confine
from outlast.runtime.worker.limits import Limits
from outlast.wire.machines import MACHINES

STEPS = ("create", "place", "start_attempt", "same_preset_again", "usage", "remove")


def measure(count: int) -> dict[str, object]:
    limits = Limits()
    if not limits.enforced:
        raise SystemExit(f"cannot measure: {limits.describe()}")
    timings: dict[str, list[float]] = {step: [] for step in STEPS}
    machine = MACHINES["small-1x"]
    try:
        for _ in range(count):
            child = os.fork()
            if child == 0:
                signal.pause()
                os._exit(0)
            began = time.perf_counter()
            cgroup = limits.create()
            assert cgroup is not None
            timings["create"].append(time.perf_counter() - began)
            began = time.perf_counter()
            cgroup.place(child)
            limits.adopt(child, cgroup)
            timings["place"].append(time.perf_counter() - began)
            began = time.perf_counter()
            limits.start_attempt(child, machine)
            timings["start_attempt"].append(time.perf_counter() - began)
            began = time.perf_counter()
            limits.start_attempt(child, machine)  # a reused process's next attempt on the same preset
            timings["same_preset_again"].append(time.perf_counter() - began)
            began = time.perf_counter()
            limits.usage(child)
            timings["usage"].append(time.perf_counter() - began)
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            began = time.perf_counter()
            exited = limits.exited(child)
            assert exited is not None and exited.remove()
            timings["remove"].append(time.perf_counter() - began)
    finally:
        limits.close()
    result: dict[str, object] = {"count": count, "controllers": {c: h.version for c, h in limits.hierarchies.items()}}
    for step, values in timings.items():
        ordered = sorted(values)
        result[f"{step}_p50_ms"] = round(statistics.median(ordered) * 1000, 3)
        result[f"{step}_p99_ms"] = round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3)
    return result


def measure_confine(count: int) -> dict[str, float]:
    """p50 and p99 of confine() in a freshly forked child (what each isolated task process pays once),
    its seccomp filter built beforehand in the parent, as the fork server does."""
    _seccomp.prepared()
    timings = []
    for _ in range(count):
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            began = time.perf_counter()
            confine()
            os.write(w, str(time.perf_counter() - began).encode())
            os._exit(0)
        os.close(w)
        timings.append(float(os.read(r, 64)))
        os.close(r)
        os.waitpid(child, 0)
    ordered = sorted(timings)
    return {"confine_p50_ms": round(statistics.median(ordered) * 1000, 3),
            "confine_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a few processes: checks it runs, measures nothing")
    args = parser.parse_args()
    count = 5 if args.smoke else args.count
    print(json.dumps({**measure(count), **measure_confine(count)}))


if __name__ == "__main__":
    main()
