"""Benchmark durable waits with CRIU checkpoints: `python -m bench.checkpoints [--quick | --smoke | --ten-thousand]
[--store s3]`.

Starts real `outlast runtime` subprocesses (SQLite, the local checkpoint store or, with `--store s3`,
S3 on moto's server) serving
bench/waits_project, whose tasks wait for a token with `checkpoint_after=0`, and measures:
suspend and resume latency (small task, 100 MiB task), image sizes, memory held per waiting run
(checkpointed vs kept alive), and how many runs wait at once on this machine. Prints a table and
writes bench/results/checkpoints.json and checkpoints.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path[0] = str(ROOT)

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.common import (  # noqa: E402
    BENCH,
    RESULTS,
    Service,
    background_load,
    free_port,
    latency_summary,
    machine_info,
    process_identity,
    stop_all_services,
    wait_for_quiet,
    wait_until,
)

SECRET_KEY = "ol_bench_0123456789abcdef"
PROJECT = BENCH / "waits_project"
LOGS = RESULTS / "logs"
LIVE_STATUSES = ["DELAYED", "QUEUED", "EXECUTING"]  # anything not yet WAITING or final
QUIET_CORES = 0.25
RESTORE_PARTS = {"fetch", "criu_restore", "reconnect"}
LOW_MEMORY_MB = 4000  # the capacity phase stops restoring when the machine has less available
MB = 1e6
S3_BUCKET = "outlast-bench"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

console = Console()
if not console.is_terminal:
    console = Console(width=160)


@dataclass
class Settings:
    samples: int = 30  # latency samples per task size
    memory_runs: int = 50  # runs waiting at once for the memory comparison
    waiting: int = 1000  # runs waiting at once for the capacity phase
    budget: float = 240  # seconds the capacity phase may spend triggering runs to suspend
    slots: int = 2  # the runtime's default

    @classmethod
    def quick(cls) -> Settings:
        return cls(samples=10, memory_runs=20, waiting=100, budget=60)

    @classmethod
    def ten_thousand(cls) -> Settings:
        """The issue's scale: 10,000 small runs waiting at once (hours on a small machine)."""
        return cls(samples=10, memory_runs=20, waiting=10_000, budget=4 * 3600)

    @classmethod
    def smoke(cls) -> Settings:
        """A few runs per phase (tests/test_benchmarks.py): proves each phase works, measures nothing."""
        return cls(samples=2, memory_runs=2, waiting=3, budget=60)


# --- the runtime ----------------------------------------------------------------------------------


class Runtime:
    """`outlast runtime` serving bench/waits_project on a fresh SQLite store and data directory."""

    def __init__(self, name: str, slots: int, checkpoints: bool, s3: str | None = None) -> None:
        self.name = name
        self.slots = slots
        self.checkpoints = checkpoints
        self.s3 = s3  # moto's endpoint: the checkpoint store is s3://S3_BUCKET/<name>/ there
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"outlast-ckpt-bench-{name}-"))
        self.service: Service | None = None
        self.client: Any = None

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "data" / "checkpoints"

    def __enter__(self) -> Runtime:
        from outlast import Client

        port = free_port()
        args = [sys.executable, "-m", "outlast.cli", "runtime", "--port", str(port), "--slots", str(self.slots),
                "--data-dir", str(self.data_dir / "data"), "--project", str(PROJECT), "--node-id", "bench"]
        env = {**os.environ, "OUTLAST_SECRET_KEY": SECRET_KEY, "OUTLAST_CHECKPOINTS": "auto" if self.checkpoints
               else "off",
               # The tasks say checkpoint_after=0 themselves; the default says it too because a process
               # restored from a checkpoint and then reused for another run does not know its tasks'
               # options (it falls back to this default: 5 s otherwise).
               "OUTLAST_CHECKPOINT_AFTER": "0"}
        for name in ("OUTLAST_DATABASE_URL", "OUTLAST_CHECKPOINT_STORE", "OUTLAST_DATA_DIR"):
            env.pop(name, None)
        if self.s3:
            env.update(OUTLAST_CHECKPOINT_STORE=f"s3://{S3_BUCKET}/{self.name}/", OUTLAST_S3_ENDPOINT_URL=self.s3,
                       **S3_CREDENTIALS)
        log = LOGS / f"checkpoints-{self.name}.log"
        log.unlink(missing_ok=True)
        self.service = Service(f"runtime ({self.name})", args, env, log).start()
        self.client = Client(api_url=f"http://127.0.0.1:{port}", secret_key=SECRET_KEY, timeout=120)
        wait_until(self._ready, timeout=90, interval=0.1, what=f"the {self.name} runtime to serve its tasks",
                   alive=self.service.check_alive)
        return self

    def _ready(self) -> bool:
        import httpx

        try:
            tasks = httpx.get(self.client.api_url + "/api/v1/tasks",
                              headers={"Authorization": f"Bearer {SECRET_KEY}"}, timeout=2)
        except httpx.HTTPError:
            return False
        return tasks.status_code == 200 and {"wait-small", "wait-big"} <= {t["id"] for t in tasks.json()}

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.client is not None:
                self.client.close()
            if self.service is not None:
                self.service.stop()
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # --- helpers the phases share ---

    def token(self) -> str:
        from outlast import wait

        return wait.create_token(client=self.client, timeout="2h").id

    def status(self, run_id: str) -> str:
        return self.client.retrieve_run(run_id).status.value

    def await_status(self, run_id: str, wanted: set[str], timeout: float = 300) -> Any:
        def reached() -> Any:
            run = self.client.retrieve_run(run_id)
            if run.status.value in wanted:
                return run
            if run.is_final:
                raise RuntimeError(f"run {run_id} ended {run.status.value} ({run.error}); "
                                   f"log {self.service.log_path}:\n{self.service.log_tail()}")
            return None

        return wait_until(reached, timeout, interval=0.05, what=f"run {run_id} to be {'/'.join(wanted)}",
                          alive=self.service.check_alive)

    def await_drained(self, statuses: list[str], timeout: float, what: str) -> None:
        """Until no run has any of `statuses`."""
        began = logged = time.monotonic()

        def drained() -> bool:
            nonlocal logged
            if time.monotonic() - logged > 15:
                logged = time.monotonic()
                console.log(f"  still waiting for {what} ({logged - began:.0f}s)")
            return not self.client.list_runs(status=statuses, limit=1).data

        wait_until(drained, timeout, interval=0.5, what=what, alive=self.service.check_alive)

    def await_waiting(self, runs: int, timeout: float) -> None:
        """Until nothing is queued or executing, then check that `runs` runs are WAITING."""
        self.await_drained(LIVE_STATUSES, timeout, f"{runs} runs to be WAITING")
        count = sum(1 for _ in self.client.iter_runs(status="WAITING", limit=500))
        if count != runs:
            raise RuntimeError(f"expected {runs} WAITING runs, found {count}")

    def await_finished(self, runs: int, timeout: float) -> None:
        self.await_drained([*LIVE_STATUSES, "WAITING"], timeout, f"{runs} runs to finish")

    def settle(self) -> None:
        """Until the process tree stops changing (finished processes gone, the warm pool refilled)."""
        time.sleep(1)
        last: list[int] = []
        for _ in range(20):
            current = sorted(self.service.tree())
            if current == last:
                return
            last = current
            time.sleep(1)

    def restore_parts(self, run_id: str) -> dict[str, float]:
        """The milliseconds of a run's last restore the runtime logged: fetch, criu restore, reconnect."""
        text = self.service.log_path.read_text(errors="replace")
        parts: dict[str, float] = {}
        for match in re.finditer(rf"checkpoint {re.escape(run_id)}/\S+: fetched in ([\d.]+) ms, restored by criu "
                                 rf"in ([\d.]+) ms", text):
            parts.update(fetch=float(match[1]), criu_restore=float(match[2]))
        for match in re.finditer(rf"run {re.escape(run_id)}: reconnected ([\d.]+) ms after its restore", text):
            parts["reconnect"] = float(match[1])
        return parts

    def waiting_event(self, run_id: str) -> Any:
        return next(e for e in reversed(self.client.run_events(run_id))
                    if e.kind == "status" and e.data.get("status") == "WAITING")

    def memory(self) -> dict[str, Any]:
        """RSS and PSS (MB) summed over the runtime and all its descendant processes, and what they are."""
        processes = []
        for pid in self.service.tree():
            rss, pss = _proc_kb(f"/proc/{pid}/status", "VmRSS:"), _proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
            processes.append({"pid": pid, "command": _command(pid), "rss_mb": round(rss * 1024 / MB, 1),
                              "pss_mb": round(pss * 1024 / MB, 1)})
        return {"processes": len(processes), "rss_mb": sum(p["rss_mb"] for p in processes),
                "pss_mb": sum(p["pss_mb"] for p in processes), "tree": processes}

    def runtime_rss_mb(self) -> float:
        """The runtime process alone (not its task processes)."""
        assert self.service is not None
        return _proc_kb(f"/proc/{self.service.pid}/status", "VmRSS:") * 1024 / MB

    def store_usage(self) -> dict[str, float]:
        """Files in the checkpoint store: count, apparent size and blocks allocated on disk (S3: the
        objects' sizes)."""
        if self.s3:
            import boto3

            client = boto3.client("s3", endpoint_url=self.s3, **_boto_credentials())
            sizes = [item["Size"] for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=S3_BUCKET, Prefix=f"{self.name}/") for item in page.get("Contents", [])]
            return {"files": len(sizes), "size_mb": sum(sizes) / MB, "disk_mb": sum(sizes) / MB}
        files = size = blocks = 0
        for folder, _dirs, names in os.walk(self.store_dir):
            for name in names:
                try:
                    st = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                files, size, blocks = files + 1, size + st.st_size, blocks + st.st_blocks * 512
        return {"files": files, "size_mb": size / MB, "disk_mb": blocks / MB}


def _proc_kb(path: str, field_name: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field_name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _command(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(w.decode(errors="replace") for w in words if w)[:120]


def _parallel(function: Any, items: list[Any], threads: int = 8) -> list[Any]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(function, items))


def _trigger_many(runtime: Runtime, task: str, payloads: list[dict[str, Any]]) -> list[str]:
    from outlast.wire import BatchItem

    ids: list[str] = []
    for start in range(0, len(payloads), 500):
        items = [BatchItem(task=task, payload=payload) for payload in payloads[start:start + 500]]
        ids += [run.id for run in runtime.client.batch_trigger(items).runs]
    return ids


def _check_completed(runtime: Runtime, run_ids: list[str]) -> float:
    """Every run COMPLETED with ok output; returns the latest completed_at."""
    wanted, last, bad = set(run_ids), 0.0, []
    for run in runtime.client.iter_runs(limit=500):
        if run.id not in wanted:
            continue
        wanted.discard(run.id)
        if run.status.value != "COMPLETED" or not (run.output or {}).get("ok"):
            bad.append(f"{run.id} {run.status.value} {run.error} {run.output}")
        else:
            last = max(last, run.completed_at.timestamp())
    if bad or wanted:
        raise RuntimeError(f"{len(bad)} runs did not complete intact, {len(wanted)} missing: {bad[:3]}")
    return last


# --- phases ---------------------------------------------------------------------------------------


def measure_latency(runtime: Runtime, task: str, samples: int) -> dict[str, Any]:
    """One run at a time: trigger, wait for WAITING, complete its token, wait for COMPLETED."""
    rows: list[dict[str, float]] = []
    failed: list[str] = []
    while len(rows) < samples and len(failed) <= samples:
        token = runtime.token()
        run_id = runtime.client.trigger(task, {"token": token}).id
        runtime.await_status(run_id, {"WAITING"})
        event = runtime.waiting_event(run_id)
        detail = event.data.get("checkpoint") or {}
        completing = time.time()
        runtime.client.complete_token(token, token)
        run = runtime.await_status(run_id, {"COMPLETED"})
        if not run.output.get("ok"):
            raise RuntimeError(f"run {run_id} came back without its state: {run.output}")
        if detail.get("mode") != "criu":  # kept alive instead: not a checkpoint sample
            failed.append(event.message)
            console.log(f"  {task}: run {run_id} was not checkpointed: {event.message}")
            continue
        restored = wait_until(lambda run_id=run_id: (parts := runtime.restore_parts(run_id)).keys() >= RESTORE_PARTS
                              and parts, timeout=10, interval=0.05, what=f"the restore times of {run_id} in the log")
        store_parts = {f"store_{step}_ms": ms for step, ms in (detail.get("store_parts_ms") or {}).items()}
        rows.append({"suspend_s": event.time.timestamp() - run.output["before"],
                     "resume_s": run.output["after"] - completing,
                     "checkpoint_ms": detail["checkpoint_ms"], "store_ms": detail["store_ms"],
                     "supervisor_suspend_ms": detail["suspend_ms"], "image_bytes": detail["image_bytes"],
                     "stored_bytes": detail["stored_bytes"], **store_parts,
                     **{f"{step}_ms": ms for step, ms in restored.items()}})
        if len(rows) % 10 == 0:
            console.log(f"  {task}: {len(rows)}/{samples}")
    if not rows:
        raise RuntimeError(f"no run of {task} was checkpointed: {failed[:2]}")
    column = lambda name: [row[name] for row in rows]  # noqa: E731
    return {
        "suspend": latency_summary(column("suspend_s")),
        "resume": latency_summary(column("resume_s")),
        "criu_checkpoint": latency_summary([v / 1000 for v in column("checkpoint_ms")]),
        "store_put": latency_summary([v / 1000 for v in column("store_ms")]),
        "supervisor_suspend": latency_summary([v / 1000 for v in column("supervisor_suspend_ms")]),
        # Each part of suspend and resume (seconds; absent where a store does not time its steps).
        "parts": {name[:-3]: latency_summary([row[name] / 1000 for row in rows if name in row])
                  for name in sorted({n for row in rows for n in row if n.endswith("_ms")})},
        "image_mb": sum(column("image_bytes")) / len(rows) / MB,
        "stored_mb": sum(column("stored_bytes")) / len(rows) / MB,
        "not_checkpointed": failed,
        "samples": rows,
    }


def warm_up(runtime: Runtime, runs: int = 2) -> None:
    """A few untimed runs: the first process start and the first checkpoint pay for imports and caches."""
    for _ in range(runs):
        token = runtime.token()
        run_id = runtime.client.trigger("wait-small", {"token": token}).id
        runtime.await_status(run_id, {"WAITING"})
        runtime.client.complete_token(token, token)
        runtime.await_status(run_id, {"COMPLETED"})


def measure_memory(runtime: Runtime, runs: int) -> dict[str, Any]:
    """Memory held while `runs` small runs wait: the task processes that hold them (each run names
    its host PID; gone once checkpointed) plus what the runtime process itself grew by. The whole
    process tree is recorded too, but its difference is blurred by the warm pool refilling."""
    runtime.settle()
    idle = runtime.memory()
    pid_dir = runtime.data_dir / "pids"
    pid_dir.mkdir(exist_ok=True)
    tokens = _parallel(lambda _: runtime.token(), list(range(runs)))
    items = [{"token": token, "pid_file": str(pid_dir / f"{index}.pid")} for index, token in enumerate(tokens)]
    run_ids = _trigger_many(runtime, "wait-small", items)
    runtime.await_waiting(runs, timeout=60 + runs * 10)
    runtime.settle()
    held = runtime.memory()
    identities = [path.read_text() for path in pid_dir.glob("*.pid")]
    holders = [int(identity.split(":")[0]) for identity in identities
               if process_identity(int(identity.split(":")[0])) == identity]
    holders_rss = sum(_proc_kb(f"/proc/{pid}/status", "VmRSS:") for pid in holders) * 1024 / MB
    holders_pss = sum(_proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in holders) * 1024 / MB
    runtime_growth_rss = held["tree"][0]["rss_mb"] - idle["tree"][0]["rss_mb"]
    runtime_growth_pss = held["tree"][0]["pss_mb"] - idle["tree"][0]["pss_mb"]
    modes = Counter(_parallel(lambda run_id: runtime.waiting_event(run_id).data.get("checkpoint", {}).get("mode"),
                              run_ids))
    _parallel(lambda token: runtime.client.complete_token(token, token), tokens)
    runtime.await_finished(runs, timeout=60 + runs * 10)
    _check_completed(runtime, run_ids)
    return {"runs": runs, "slots": runtime.slots, "modes": dict(modes), "idle": idle, "waiting": held,
            "processes_holding_runs": len(holders), "holders_rss_mb": holders_rss, "holders_pss_mb": holders_pss,
            "runtime_growth_rss_mb": runtime_growth_rss,
            "rss_mb_per_run": (holders_rss + runtime_growth_rss) / runs,
            "pss_mb_per_run": (holders_pss + runtime_growth_pss) / runs}


def measure_capacity(runtime: Runtime, runs: int, budget: float, tree_limit_mb: float) -> dict[str, Any]:
    """As many small runs waiting at once as asked for (or as get suspended within `budget` seconds):
    how long suspending them took, the disk and memory they hold, and how long until they all
    completed once their tokens were. Restores stop early (the remaining runs are canceled) if the
    runtime's processes grow past `tree_limit_mb`, so the benchmark never exhausts a shared machine."""
    runtime.settle()
    idle, idle_runtime = runtime.memory(), runtime.runtime_rss_mb()
    console.log(f"  creating {runs} tokens")
    tokens = _parallel(lambda _: runtime.token(), list(range(runs)))
    began = time.time()
    run_ids: list[str] = []
    chunk = 50
    while len(run_ids) < runs:
        if time.time() - began > budget:
            console.log(f"  {budget:.0f}s budget used up: {len(run_ids)} of {runs} runs triggered")
            break
        # Keep only a little ahead of the suspends, so the budget stops the phase in time.
        if len(run_ids) - _count(runtime, "WAITING") < chunk * 2:
            batch = tokens[len(run_ids):len(run_ids) + chunk]
            run_ids += _trigger_many(runtime, "wait-small", [{"token": token} for token in batch])
        else:
            time.sleep(0.5)
    tokens = tokens[:len(run_ids)]
    runtime.await_waiting(len(run_ids), timeout=120 + runs * 5)
    last_waiting = max(run.updated_at.timestamp() for run in runtime.client.iter_runs(status="WAITING", limit=500))
    runtime.settle()
    held, held_runtime, disk = runtime.memory(), runtime.runtime_rss_mb(), runtime.store_usage()
    modes = Counter(_parallel(lambda run_id: runtime.waiting_event(run_id).data.get("checkpoint", {}).get("mode"),
                              run_ids))
    n = len(run_ids)
    console.log(f"  {n} runs WAITING after {last_waiting - began:.1f}s ({dict(modes)}); store "
                f"{disk['disk_mb']:.0f} MB; completing their tokens")
    completing = time.time()
    _parallel(lambda token: runtime.client.complete_token(token, token), tokens)
    completed_calls = time.time()
    stopped = _await_restores(runtime, run_ids, tree_limit_mb)
    mine = set(run_ids)
    finished = [run.completed_at.timestamp() for run in runtime.client.iter_runs(status="COMPLETED", limit=500)
                if run.id in mine]
    last_completed, completed = max(finished, default=completing), len(finished)
    before_cleanup = runtime.memory()
    if stopped:
        console.log(f"  {stopped}; canceling the runs not restored yet")
        left = [run.id for run in runtime.client.iter_runs(status=["WAITING", "QUEUED"], limit=500)]
        _parallel(lambda run_id: _cancel(runtime, run_id), left)
        runtime.await_drained([*LIVE_STATUSES, "WAITING"], 120, "the canceled runs")
    else:
        _check_completed(runtime, run_ids)
    return {
        "runs": n,
        "asked": runs,
        "budget_s": budget,
        "modes": dict(modes),
        "all_waiting_s": last_waiting - began,
        "store": disk,
        "stored_mb_per_run": disk["size_mb"] / n,
        "disk_mb_per_run": disk["disk_mb"] / n,
        "idle": idle,
        "waiting": held,
        "runtime_rss_mb": {"idle": idle_runtime, "waiting": held_runtime},
        "store_kind": "s3 (moto)" if runtime.s3 else "local",
        "complete_calls_s": completed_calls - completing,
        "completed": completed,
        "completed_s": last_completed - completing,
        "restores_stopped": stopped,
        "after_restores": before_cleanup,
    }


def _cancel(runtime: Runtime, run_id: str) -> None:
    with contextlib.suppress(Exception):  # it may have started or ended meanwhile
        runtime.client.cancel_run(run_id)


def _count(runtime: Runtime, status: str, among: list[str] | None = None) -> int:
    wanted = set(among) if among is not None else None
    return sum(1 for run in runtime.client.iter_runs(status=status, limit=500) if wanted is None or run.id in wanted)


def _await_restores(runtime: Runtime, run_ids: list[str], tree_limit_mb: float) -> str:
    """Until none of the runs waits or is queued: '' then, else why it stopped watching. It stops when
    the runtime's process tree grows past `tree_limit_mb` or the machine runs low on memory, which
    protects a shared machine if restored processes pile up."""
    began = logged = time.monotonic()
    timeout = 120 + len(run_ids) * 5
    while runtime.client.list_runs(status=[*LIVE_STATUSES, "WAITING"], limit=1).data:
        runtime.service.check_alive()
        available = _proc_kb("/proc/meminfo", "MemAvailable:") * 1024 / MB
        tree = runtime.memory()
        if tree["rss_mb"] > tree_limit_mb or available < LOW_MEMORY_MB:
            return (f"stopped after {_count(runtime, 'COMPLETED', run_ids)} restores: the runtime's tree held "
                    f"{tree['rss_mb'] / 1000:.1f} GB in {tree['processes']} processes (limit "
                    f"{tree_limit_mb / 1000:.1f} GB), the machine had {available / 1000:.1f} GB available")
        if time.monotonic() - logged > 15:
            logged = time.monotonic()
            console.log(f"  restoring: {_count(runtime, 'COMPLETED', run_ids)} of {len(run_ids)} completed, "
                        f"{tree['processes']} processes, {tree['rss_mb']:.0f} MB ({logged - began:.0f}s)")
        if time.monotonic() - began > timeout:
            return f"stopped: not all {len(run_ids)} runs completed within {timeout}s"
        time.sleep(1)
    return ""


# --- report ---------------------------------------------------------------------------------------


def rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, value, what it is) lines of the table."""
    out: list[tuple[str, str, str]] = []
    latency = report.get("latency") or {}
    for key, label in (("small", "small task"), ("big", "100 MiB task")):
        entry = latency.get(key)
        if not entry:
            continue
        n = entry["suspend"]["samples"]
        out += [
            (f"suspend p50 / p99, {label}", _ms(entry["suspend"]),
             f"`await wait.for_token` → run WAITING, slot free ({n} runs)"),
            (f"  CRIU dump p50 / p99, {label}", _ms(entry["criu_checkpoint"]), "`criu dump` alone"),
            (f"  store put p50 / p99, {label}", _ms(entry["store_put"]),
             "packing the image (page hashing, zstd) and fsync into the local store"),
            *[(f"    {part} p50 / p99", _ms(summary), "a step of the store put")
              for part, summary in (entry.get("parts") or {}).items() if part.startswith("store_")
              and part != "store"],
            (f"resume p50 / p99, {label}", _ms(entry["resume"]),
             "token completed (client) → next line after the wait runs"),
            *[(f"  {part} p50 / p99", _ms((entry.get("parts") or {})[part]), what)
              for part, what in (("fetch", "store get: unpack the image into scratch"),
                                 ("criu_restore", "`criu restore` alone"),
                                 ("reconnect", "SIGUSR1 → the restored process connected again"))
              if part in (entry.get("parts") or {})],
            (f"image per waiting run, {label}", f"{entry['stored_mb']:.1f} MB stored ({entry['image_mb']:.1f} MB raw)",
             "what each put added to the store (compressed, pages the store already held not counted); raw: "
             "CRIU's image files"),
        ]
    for key, label in (("checkpointed", "checkpointed"), ("kept_alive", "kept alive (OUTLAST_CHECKPOINTS=off)")):
        entry = (report.get("memory") or {}).get(key)
        if entry:
            idle, held = entry["idle"], entry["waiting"]
            out.append((f"memory per waiting run, {label}",
                        f"{entry['rss_mb_per_run']:.1f} MB RSS ({entry['pss_mb_per_run']:.1f} MB PSS)",
                        f"{entry['runs']} small runs waiting {_modes(entry['modes'])}: "
                        f"{entry['processes_holding_runs']} processes hold them "
                        f"({entry['holders_rss_mb']:.0f} MB RSS), the runtime process grew "
                        f"{entry['runtime_growth_rss_mb']:.0f} MB; whole tree {idle['rss_mb']:.0f} → "
                        f"{held['rss_mb']:.0f} MB"))
    capacity = report.get("capacity")
    if capacity:
        n, done = capacity["runs"], capacity["completed"]
        out += [
            (f"{n} runs waiting at once", f"all WAITING after {capacity['all_waiting_s']:.1f} s",
             f"from the first trigger; {n / capacity['all_waiting_s']:.2f} suspends/s"
             + (f" (asked for {capacity['asked']}; stopped at the {capacity['budget_s']:.0f} s budget)"
                if n < capacity["asked"] else "")),
            ("  store on disk" if capacity.get("store_kind", "local") == "local" else "  bucket",
             f"{capacity['store']['disk_mb']:.0f} MB ({capacity['disk_mb_per_run']:.2f} MB/run)",
             f"all {'files' if capacity.get('store_kind', 'local') == 'local' else 'objects'} of the store "
             f"({capacity['store']['files']}, shared pages included); runs {_modes(capacity['modes'])}"),
            *([("  runtime process RSS while they wait", f"{capacity['runtime_rss_mb']['waiting']:.0f} MB",
                f"the runtime process alone; idle before: {capacity['runtime_rss_mb']['idle']:.0f} MB")]
              if "runtime_rss_mb" in capacity else []),
            ("  runtime RSS while they wait", f"{capacity['waiting']['rss_mb']:.0f} MB",
             f"runtime + descendants ({capacity['waiting']['processes']} processes); before: "
             f"{capacity['idle']['rss_mb']:.0f} MB ({capacity['idle']['processes']})"),
            (f"  {done} of {n} completed after", f"{capacity['completed_s']:.1f} s",
             f"from the first token completion; {done / max(capacity['completed_s'], 1e-9):.2f} restores/s"),
            ("  runtime RSS after the restores", f"{capacity['after_restores']['rss_mb']:.0f} MB",
             f"{capacity['after_restores']['processes']} processes"
             + (f"; {capacity['restores_stopped']}" if capacity["restores_stopped"] else "")),
        ]
        ten_k = report.get("extrapolated_10000")
        if ten_k:
            out.append(("10,000 waiting (extrapolated, not run)", f"~{ten_k['disk_gb']:.0f} GB of disk",
                        ten_k["note"]))
    return out


def _modes(modes: dict[str, int]) -> str:
    return "(" + ", ".join(f"{count} {mode}" for mode, count in modes.items()) + ")"


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50_ms']:.0f} / {summary['p99_ms']:.0f} ms"


def print_report(report: dict[str, Any]) -> None:
    table = Table(title="outlast: durable waits with CRIU checkpoints")
    for column in ("metric", "value", "what"):
        table.add_column(column)
    for line in rows(report):
        table.add_row(*line)
    console.print(table)
    for note in report["notes"]:
        console.print(f"- {note}")


def markdown(report: dict[str, Any]) -> str:
    lines = ["| metric | value | what |", "|---|---|---|"]
    lines += [f"| {a.strip()} | {b} | {c} |" for a, b, c in rows(report)]
    return "\n".join(lines + [""] + [f"- {note}" for note in report["notes"]]) + "\n"


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="10 latency samples, 20 runs for memory, 100 waiting at once (about 3 minutes)")
    size.add_argument("--ten-thousand", action="store_true",
                      help="the capacity phase with 10,000 runs waiting at once (budget 4 h; hours on 2 cores)")
    size.add_argument("--smoke", action="store_true",
                      help="2 latency samples, 2 runs for memory, 3 waiting at once: checks that every phase works")
    parser.add_argument("--samples", type=int, help="latency samples per task size (default 30; quick 10)")
    parser.add_argument("--memory-runs", type=int, help="runs waiting for the memory comparison (default 50)")
    parser.add_argument("--waiting", type=int, help="runs waiting at once in the capacity phase (default 1000; "
                                                    "quick 100; 0 skips it)")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="the capacity phase stops triggering after this long (default 240; quick 60)")
    parser.add_argument("--tree-limit", type=float, metavar="MB",
                        default=round(_proc_kb("/proc/meminfo", "MemTotal:") * 1024 / MB * 0.25),
                        help="stop the restores of the capacity phase if the runtime's processes hold more than this "
                             "(default: a quarter of the machine's memory)")
    parser.add_argument("--slots", type=int, default=2, help="the runtime's slots (default 2, its own default)")
    parser.add_argument("--wait-quiet", type=float, default=30, metavar="SECONDS",
                        help=f"first wait up to this long for other processes to use under {QUIET_CORES} cores")
    parser.add_argument("--store", choices=["local", "s3"], default="local",
                        help="the checkpoint store: local (default) or S3 on moto's server, started here")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for checkpoints.json/.md")
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every finally: subprocesses get stopped


def _phase(report: dict[str, Any], runtime: Runtime, name: str, function: Any, *args: Any) -> Any:
    """Run one phase; its error is recorded and the next phase goes on. Other processes' load is
    sampled first, while this runtime is idle."""
    console.rule(name)
    load = background_load(2.0, exclude=runtime.service.tree())
    report["load"][name] = round(load, 2)
    began = time.monotonic()
    try:
        return function(*args)
    except Exception as exc:
        report["errors"].append(f"{name}: {exc!r}")
        console.print(traceback.format_exc(), markup=False)
        return None
    finally:
        console.log(f"{name}: {time.monotonic() - began:.0f}s (other processes used {load:.2f} cores just before)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = (Settings.smoke() if args.smoke else Settings.quick() if args.quick
                else Settings.ten_thousand() if args.ten_thousand else Settings())
    for name in ("samples", "memory_runs", "waiting", "budget"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    settings.slots = args.slots
    signal.signal(signal.SIGTERM, _terminate)
    atexit.register(stop_all_services)
    began = time.monotonic()
    load = wait_for_quiet(args.wait_quiet, QUIET_CORES, console.log)
    report: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
                              "smoke": args.smoke, "store": args.store, "settings": asdict(settings),
                              "machine": machine_info(),
                              "background_load_cores_at_start": round(load, 2), "errors": [], "notes": [],
                              "latency": {}, "memory": {}, "load": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    s3 = contextlib.ExitStack()
    try:
        endpoint = s3.enter_context(_moto()) if args.store == "s3" else None
        # Memory first, on fresh runtimes: the idle figure is then the runtime plus its warm pool.
        with Runtime("kept-alive", settings.slots, checkpoints=False) as runtime:
            report["memory"]["kept_alive"] = _phase(report, runtime, "memory: kept alive", measure_memory, runtime,
                                                    settings.memory_runs)
        with Runtime("checkpointed", settings.slots, checkpoints=True, s3=endpoint) as runtime:
            report["memory"]["checkpointed"] = _phase(report, runtime, "memory: checkpointed", measure_memory,
                                                      runtime, settings.memory_runs)
            _phase(report, runtime, "warm-up", warm_up, runtime)
            for key, task in (("small", "wait-small"), ("big", "wait-big")):
                result = _phase(report, runtime, f"latency: {task}", measure_latency, runtime, task, settings.samples)
                if result:
                    report["latency"][key] = result
            if settings.waiting:
                capacity = _capacity_fits(report, runtime, settings.waiting)
                report["capacity"] = _phase(report, runtime, f"capacity: up to {capacity} runs waiting",
                                            measure_capacity, runtime, capacity, settings.budget, args.tree_limit)
    except KeyboardInterrupt:
        report["errors"].append("interrupted")
        raise
    finally:
        stop_all_services()
        s3.close()
        report["duration_s"] = round(time.monotonic() - began, 1)
        _notes(report)
        (args.out / "checkpoints.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "checkpoints.md").write_text(markdown(report))
    print_report(report)
    console.print(f"wrote {args.out / 'checkpoints.json'} and checkpoints.md in {report['duration_s']:.0f}s")
    return 1 if report["errors"] else 0


def _boto_credentials() -> dict[str, str]:
    return {"region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
            "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}


@contextlib.contextmanager
def _moto() -> Any:
    """moto's S3 server in this process, with the benchmark's bucket; yields its endpoint."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=S3_BUCKET)
        yield endpoint
    finally:
        server.stop()


def _capacity_fits(report: dict[str, Any], runtime: Runtime, wanted: int) -> int:
    """As many runs as asked for, unless the disk would not hold them (twice the measured size each)."""
    per_run_mb = (report["latency"].get("small") or {}).get("stored_mb", 10.0)
    free_mb = shutil.disk_usage(runtime.data_dir).free / MB
    fits = int(free_mb * 0.5 / (per_run_mb * 2))
    if fits < wanted:
        report["notes"].append(f"--waiting {wanted} would not fit on the disk here ({free_mb / 1000:.0f} GB free); "
                               f"ran {fits}")
        return fits
    return wanted


def _notes(report: dict[str, Any]) -> None:
    notes = report["notes"]
    capacity, small = report.get("capacity"), (report.get("latency") or {}).get("small")
    per_run = capacity["disk_mb_per_run"] if capacity else (small or {}).get("stored_mb")
    if per_run:
        basis = f"the {capacity['runs']} runs measured" if capacity else "the small task's image"
        rate = capacity["runs"] / capacity["all_waiting_s"] if capacity else None
        report["extrapolated_10000"] = {
            "disk_gb": per_run * 10_000 / 1000,
            "note": f"{per_run:.2f} MB/run x 10,000 from {basis}"
                    + (f"; suspending them at the {rate:.2f}/s measured would take {10_000 / rate / 3600:.1f} h"
                       if rate else "")
                    + "; waiting runs hold no process, so memory is not the limit while they wait",
        }
    loads = list(report["load"].values())
    if loads and max(loads) >= QUIET_CORES:
        notes.append(f"other processes kept up to {max(loads):.2f} of the {os.cpu_count()} cores busy during the "
                     "phases (sampled just before each; other engineers' tests): latencies and rates are inflated")
    notes.append("suspend is measured from the task's time.time() before the wait to the WAITING event's time (the "
                 "runtime's clock, same machine); resume from the benchmark's time.time() before complete_token to "
                 "the task's time.time() after the wait returned")
    capacity = report.get("capacity")
    if capacity and capacity["after_restores"]["processes"] > report["settings"]["slots"] + 5:
        after = capacity["after_restores"]
        notes.append(f"after the restores the runtime kept {after['processes'] - 1} task processes "
                     f"({after['rss_mb']:.0f} MB in all): each restored process stays in the warm pool once its run "
                     "ends, beyond one per slot")
    notes.append("the 100 MiB task holds os.urandom bytes: incompressible, the worst case for image size")
    for error in report["errors"]:
        notes.append(f"ERROR {error}")
    for key, entry in (report.get("latency") or {}).items():
        if entry.get("not_checkpointed"):
            notes.append(f"{len(entry['not_checkpointed'])} {key} runs were kept alive instead of checkpointed (left "
                         f"out of the samples): {entry['not_checkpointed'][0][:200]}")


if __name__ == "__main__":
    sys.exit(main())
