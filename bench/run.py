"""Benchmark outlast against Celery on this machine: `python bench/run.py [--quick | --smoke]`.

Runs every workload (bench/workloads.py) on each system (bench/targets.py) in turn, prints a table,
and writes bench/results/latest.json and bench/results/latest.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import json
import signal
import sys
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path[0] = str(ROOT)

from rich.console import Console  # noqa: E402

from bench.common import RESULTS, machine_info, stop_all_services, wait_for_quiet  # noqa: E402
from bench.report import markdown, print_report  # noqa: E402
from bench.workloads import Settings, Target, run_all  # noqa: E402

QUIET_CORES = 0.25
console = Console()
if not console.is_terminal:  # piped or redirected: wide enough for the table, not 80 columns
    console = Console(width=160)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="smaller workloads (1000 runs, 50 latency samples): about a third of the time")
    size.add_argument("--smoke", action="store_true",
                      help="a few runs per phase: checks that every phase works, its numbers mean nothing")
    parser.add_argument("--store", choices=["sqlite", "postgres", "both", "none"], default="both",
                        help="outlast's store(s) to benchmark (default: both; none: Celery only)")
    parser.add_argument("--skip-celery", action="store_true", help="do not run the Celery reference")
    parser.add_argument("--wait-quiet", type=float, default=120, metavar="SECONDS",
                        help="before each system, wait up to this long for other processes to use under "
                             f"{QUIET_CORES} cores (default: 120; 0: do not wait)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.json/latest.md")
    return parser.parse_args(argv)


def targets(args: argparse.Namespace) -> list[Target]:
    from bench.targets import CeleryTarget, OutlastTarget

    chosen: list[Target] = []
    if args.store in ("sqlite", "both"):
        chosen.append(OutlastTarget("sqlite"))
    if args.store in ("postgres", "both"):
        chosen.append(OutlastTarget("postgres"))
    if not args.skip_celery:
        chosen.append(CeleryTarget())
    return chosen


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every finally: subprocesses get stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.smoke() if args.smoke else Settings.quick() if args.quick else Settings()
    signal.signal(signal.SIGTERM, _terminate)
    atexit.register(stop_all_services)
    began = time.monotonic()
    report: dict = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
                    "smoke": args.smoke, "settings": asdict(settings), "machine": machine_info(), "targets": {}}
    for target in targets(args):
        entry = report["targets"][target.key] = {"label": target.label, "results": None, "error": None}
        waited = time.monotonic()
        load = wait_for_quiet(args.wait_quiet, QUIET_CORES, console.log)
        entry["background_load_cores"] = round(load, 2)
        entry["waited_for_quiet_s"] = round(time.monotonic() - waited, 1)
        console.log(f"[bold]{target.label}[/bold]: starting (other processes use {load:.2f} cores)")
        try:
            target.start()
            entry["results"] = run_all(target, settings, console.log)
        except KeyboardInterrupt:
            entry["error"] = "interrupted"
            raise
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            console.print(f"[red]{target.label} failed[/red]\n{traceback.format_exc()}")
        finally:
            try:
                target.stop()
            except Exception as exc:
                console.print(f"[red]could not stop {target.label} cleanly: {exc}[/red]")
    report["duration_s"] = time.monotonic() - began
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "latest.md").write_text(markdown(report))
    print_report(report, console)
    console.print(f"[dim]Wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}.[/dim]")
    return 1 if any(t["error"] for t in report["targets"].values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        console.print("[red]interrupted; subprocesses stopped[/red]")
        sys.exit(130)
