"""Page deduplication in the local checkpoint store: `python -m bench.dedup [--runs N] [--smoke]`.

Forks N waiting children from one small fork server (tests/criu/fork_parent.py: the shape of
`outlast._zygote`), dumps each with CRIU, then puts all the images into a plain local store
(dedup=False) and into a deduplicating one, and gets each back. Prints bytes stored for the first
image and for the others, disk used in all, and put/get times (medians). Needs working CRIU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `tests` importable
    sys.path[0] = str(ROOT)

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from outlast.runtime.checkpoint import LocalCheckpointStore, check, dump  # noqa: E402
from outlast.runtime.worker.pidns import set_child_subreaper  # noqa: E402
from tests.criu.fork_parent import fork_children  # noqa: E402

MB = 1e6


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def dump_children(count: int, workdir: Path) -> list[Path]:
    """Fork `count` children from one fork server and dump each; returns the image directories."""
    set_child_subreaper(True)
    server, children = fork_children(count, workdir)
    images = []
    try:
        for i, (pid, log) in enumerate(children):
            deadline = time.monotonic() + 30
            while "tick 3\n" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            images.append(dump(pid, workdir / f"images-{i}").images_dir)
    finally:
        for pid, _ in children:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        server.kill()
        server.wait()
    return images


def first_puts(images: list[Path], workdir: Path, repeats: int) -> dict[bool, tuple[float, float]]:
    """Median wall and CPU seconds (all threads) of a put into an empty store, without and with
    dedup, taken in turns so that the load of a shared machine weighs on both alike."""
    walls: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    for i in range(repeats):
        for dedup in (False, True) if i % 2 else (True, False):
            store = LocalCheckpointStore(workdir / f"first-{dedup}-{i}", dedup=dedup)
            cpu = time.process_time()
            walls[dedup].append(store.put("run/1", images[i % len(images)]).seconds)
            cpus[dedup].append(time.process_time() - cpu)
            shutil.rmtree(store.root)
    return {dedup: (statistics.median(walls[dedup]), statistics.median(cpus[dedup])) for dedup in walls}


def measure(store: LocalCheckpointStore, images: list[Path], workdir: Path) -> dict[str, float]:
    puts, cpus = [], []
    for i, path in enumerate(images):
        cpu = time.process_time()
        puts.append(store.put(f"run_{i}/1", path))
        cpus.append(time.process_time() - cpu)
    objects = [store.path(f"run_{i}/1").stat().st_size for i in range(1, len(images))]
    gets, get_cpus = [], []
    for i in range(len(images)):
        start, cpu = time.perf_counter(), time.process_time()
        store.get(f"run_{i}/1", workdir / f"back-{i}")
        gets.append(time.perf_counter() - start)
        get_cpus.append(time.process_time() - cpu)
        shutil.rmtree(workdir / f"back-{i}")
    return {
        "raw": statistics.mean(p.raw_bytes for p in puts),
        "first": puts[0].stored_bytes,
        "rest": statistics.mean(p.stored_bytes for p in puts[1:]) if len(puts) > 1 else float("nan"),
        "rest_object": statistics.mean(objects) if objects else float("nan"),
        "disk": disk_bytes(store.root),
        "put_first": puts[0].seconds,
        "put_rest": statistics.median(p.seconds for p in puts[1:]) if len(puts) > 1 else float("nan"),
        "put_rest_cpu": statistics.median(cpus[1:]) if len(puts) > 1 else float("nan"),
        "get": statistics.median(gets),
        "get_cpu": statistics.median(get_cpus),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="waiting children to dump (default 20)")
    parser.add_argument("--repeats", type=int, default=15, help="puts into an empty store to time (default 15)")
    parser.add_argument("--smoke", action="store_true", help="3 children, 2 repeats: checks that it works")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.repeats = 3, 2
    status = check()
    if not status.available:
        sys.exit(f"CRIU is not usable here: {status.reason}")
    with tempfile.TemporaryDirectory(prefix="outlast-dedup-") as tmp:
        workdir = Path(tmp)
        images = dump_children(args.runs, workdir)
        results = {}
        for name, dedup in [("plain", False), ("dedup", True)]:
            results[name] = measure(LocalCheckpointStore(workdir / name, dedup=dedup), images, workdir)
        for dedup, (wall, cpu) in first_puts(images, workdir, args.repeats).items():
            results["dedup" if dedup else "plain"].update(put_first=wall, put_first_cpu=cpu)
    table = Table(title=f"local checkpoint store, {args.runs} waiting runs forked from one fork server")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    rows = [("raw image (MB)", "raw", MB, ".1f"), ("stored, first image (MB)", "first", MB, ".2f"),
            ("stored, each further image (MB)", "rest", MB, ".3f"),
            ("  of which the object: small files, page runs (MB)", "rest_object", MB, ".3f"),
            ("disk used in all (MB)", "disk", MB, ".1f"),
            ("put into an empty store, median (ms)", "put_first", 1e-3, ".0f"),
            ("  CPU, all threads (ms)", "put_first_cpu", 1e-3, ".0f"),
            ("put, further images, median (ms)", "put_rest", 1e-3, ".0f"),
            ("  CPU, all threads (ms)", "put_rest_cpu", 1e-3, ".0f"),
            ("get, median (ms)", "get", 1e-3, ".0f"),
            ("  CPU (ms)", "get_cpu", 1e-3, ".0f")]
    for label, key, unit, fmt in rows:
        table.add_row(label, *(format(r[key] / unit, fmt) for r in results.values()))
    Console().print(table)


if __name__ == "__main__":
    main()
