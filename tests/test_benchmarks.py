"""The benchmarks keep running: each one's `--smoke` size end to end, in a subprocess.

Only that every phase produced its numbers is asserted; smoke sizes measure nothing, so there is
no timing assertion. They need what the benchmarks need (PostgreSQL, CRIU, Redis for Celery).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from outlast.runtime.checkpoint.criu import check as criu_check
from tests.conftest import ROOT

PHASES = ("latency", "throughput", "trigger_sequential", "trigger_threads", "trigger_batch", "backlog")


def bench(*args: str, timeout: float) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited with {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def numbers(result: dict) -> list[float]:
    return [value for value in result.values() if isinstance(value, (int, float)) and not isinstance(value, bool)]


def redis_is_up() -> bool:
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None:
        return False
    import redis

    try:
        return bool(redis.Redis(socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


needs_criu = pytest.mark.skipif(not criu_check().available, reason="needs working CRIU")


def test_run_smoke(tmp_path: Path):
    celery = redis_is_up()
    bench("bench/run.py", "--smoke", "--wait-quiet", "0", "--out", str(tmp_path),
          *([] if celery else ["--skip-celery"]), timeout=600)
    report = json.loads((tmp_path / "latest.json").read_text())
    expected = {"outlast-sqlite", "outlast-postgres"} | ({"celery"} if celery else set())
    assert set(report["targets"]) == expected
    for key, target in report["targets"].items():
        assert target["error"] is None, f"{key}: {target['error']}"
        for phase in PHASES:
            values = numbers(target["results"][phase])
            assert values and all(math.isfinite(v) for v in values), f"{key} {phase}: {target['results'][phase]}"
    assert (tmp_path / "latest.md").read_text().strip()


@needs_criu
def test_checkpoints_smoke(tmp_path: Path):
    bench("-m", "bench.checkpoints", "--smoke", "--wait-quiet", "0", "--out", str(tmp_path), timeout=900)
    report = json.loads((tmp_path / "checkpoints.json").read_text())
    assert report["errors"] == []
    for phase in ("kept_alive", "checkpointed"):
        assert numbers(report["memory"][phase]), phase
    for size in ("small", "big"):
        assert numbers(report["latency"][size]), size
    assert numbers(report["capacity"])


def test_schedules_smoke():
    # SQLite only: each store's burst workload waits for the top of a minute.
    out = bench("bench/schedules.py", "--smoke", "--store", "sqlite", timeout=300)
    for workload in ("spread", "burst"):
        assert re.search(rf"^\| sqlite \| {workload} \| 120 \| [\d,]+ \|", out, re.MULTILINE), out


@needs_criu
def test_dedup_smoke():
    out = bench("-m", "bench.dedup", "--smoke", timeout=600)
    assert "raw image (MB)" in out and "get, median (ms)" in out, out
    assert "nan" not in out, out


@pytest.mark.skipif(os.geteuid() != 0, reason="makes cgroups: needs root")
def test_limits_smoke():
    result = json.loads(bench("bench/limits.py", "--smoke", timeout=120))
    assert result["count"] == 5
    assert all(math.isfinite(result[f"{step}_p50_ms"]) for step in ("create", "place", "start_attempt", "remove"))


def test_realtime_smoke():
    result = json.loads(bench("bench/realtime.py", "--smoke", timeout=300))
    assert result["fan_out"]["missing"] == 0, result
    assert all(math.isfinite(v) for v in numbers(result["fan_out"]) + numbers(result["stream"])), result
    assert result["stream"]["chunks"] == 200, result


def test_migration_smoke():
    result = json.loads(bench("-m", "bench.migration", "--smoke", timeout=600).strip().splitlines()[-1])
    for key in ("pause_small", "pause_100mib", "recovery_after_sigkill"):
        assert all(math.isfinite(v) for v in numbers(result[key])), result
    assert result["drain_runs"] == 3 and result["drain_seconds"] > 0, result


def test_history_smoke():
    # Claim latency with finished runs in the store (bench/history.py), PostgreSQL.
    result = json.loads(bench("-m", "bench.history", "--smoke", timeout=300).strip().splitlines()[-1])
    for phase in ("empty", "with_history"):
        for step in ("claim", "complete"):
            assert result[phase][step]["samples"] == result["claims"] and math.isfinite(result[phase][step]["p50_ms"])
    assert result["history"] == 1000 and math.isfinite(result["claim_p50_ratio"])
