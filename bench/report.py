"""The results as a rich table (terminal) and a markdown table (bench/results/latest.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

CELERY = "celery"
OUTLAST = [("outlast-sqlite", "SQLite"), ("outlast-postgres", "PG")]
TARGET_P50_MS = 10.0


@dataclass(frozen=True)
class Metric:
    label: str
    phase: str
    field: str
    higher_is_better: bool
    decimals: int = 0


def metrics(settings: dict) -> list[Metric]:
    threads, batch, runs = settings["trigger_threads"], settings["batch_size"], settings["throughput_runs"]
    backlog = settings.get("backlog_runs", 0)
    return [
        Metric("triggers/s, single, sequential ↑", "trigger_sequential", "per_s", True),
        Metric(f"triggers/s, single, {threads} threads ↑", "trigger_threads", "per_s", True),
        Metric(f"triggers/s, batch of {batch} (items/s) ↑", "trigger_batch", "items_per_s", True),
        Metric(f"no-op runs/s end to end ({runs} runs, 2 slots) ↑", "throughput", "runs_per_s", True),
        Metric(f"no-op runs/s, {backlog:,} queued at once from empty ↑", "backlog", "runs_per_s", True),
        Metric("  backlog rate ÷ no-backlog rate ↑", "backlog", "vs_no_backlog", True, 2),
        Metric("trigger → start p50, idle, warm (ms) ↓", "latency", "p50_ms", False, 1),
        Metric("trigger → start p99, idle, warm (ms) ↓", "latency", "p99_ms", False, 1),
        Metric("trigger call returns, p50 (ms) ↓", "latency", "trigger_call_p50_ms", False, 1),
    ]


def _value(report: dict, key: str, metric: Metric) -> float | None:
    target = report["targets"].get(key)
    if not target or not target.get("results"):
        return None
    value = target["results"].get(metric.phase, {}).get(metric.field)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _cell(report: dict, key: str, metric: Metric) -> str:
    target = report["targets"].get(key)
    if target is None:
        return "not run"
    value = _value(report, key, metric)
    if value is None:
        return "error" if target.get("error") else "—"
    text = f"{value:,.{metric.decimals}f}"
    if key == CELERY and metric.phase == "trigger_batch":
        text += " *"
    return text


def _ratio(report: dict, metric: Metric) -> str:
    celery = _value(report, CELERY, metric)
    parts = []
    for key, short in OUTLAST:
        value = _value(report, key, metric)
        if key in report["targets"] and value is not None and celery:
            parts.append(f"{short} {value / celery:.2f}×")  # noqa: RUF001
    return " · ".join(parts) or "—"


def rows(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "outlast (SQLite)", "outlast (PostgreSQL)", "Celery", "ratio vs Celery (outlast ÷ Celery)"]
    body = []
    for metric in metrics(report["settings"]):
        body.append([metric.label, _cell(report, "outlast-sqlite", metric), _cell(report, "outlast-postgres", metric),
                     _cell(report, CELERY, metric), _ratio(report, metric)])
    return header, body


def target_checks(report: dict) -> list[str]:
    """The issue's targets: no-op throughput at least Celery's; start p50 under 10 ms with a warm process."""
    lines = []
    # By phase and field, not position: the backlog rows came in between once.
    by_field = {(m.phase, m.field): m for m in metrics(report["settings"])}
    throughput, p50 = by_field["throughput", "runs_per_s"], by_field["latency", "p50_ms"]
    celery = _value(report, CELERY, throughput)
    for key, _short in OUTLAST:
        if key not in report["targets"]:
            continue
        label = report["targets"][key]["label"]
        runs, latency = _value(report, key, throughput), _value(report, key, p50)
        if runs is not None and celery:
            ok = "PASS" if runs >= celery else "FAIL"
            lines.append(f"{ok}  {label}: no-op throughput {runs:,.0f}/s vs Celery {celery:,.0f}/s (target: ≥ Celery)")
        if latency is not None:
            ok = "PASS" if latency < TARGET_P50_MS else "FAIL"
            lines.append(f"{ok}  {label}: trigger → start p50 {latency:.1f} ms (target: < {TARGET_P50_MS:g} ms)")
    return lines


def cpu_rows(report: dict) -> list[list[str]]:
    """CPU used during the throughput phase, per component, per run."""
    out = []
    for target in report["targets"].values():
        phase = (target.get("results") or {}).get("throughput")
        if not phase:
            continue
        cpu, runs = dict(phase["cpu_seconds"]), phase["runs"]
        wall = cpu.pop("wall_s")
        rest = cpu.pop("rest of the machine", None)
        total = sum(cpu.values())
        extra = [] if rest is None else [("rest of the machine (not this benchmark)", rest)]
        for component, seconds in [*cpu.items(), ("total (this benchmark)", total), *extra]:
            out.append([target["label"], component, f"{seconds:.2f}", f"{seconds / runs * 1000:.2f}",
                        f"{seconds / wall * 100:.0f}%"])
    return out


CPU_HEADER = ["system", "process", "CPU s", "CPU ms per run", "of one core"]


def _waited(report: dict) -> str:
    waited = sum(t.get("waited_for_quiet_s") or 0 for t in report["targets"].values())
    return f", {waited:.0f} s of it waiting for a quiet machine" if waited >= 5 else ""


def notes(report: dict) -> list[str]:
    settings, machine = report["settings"], report["machine"]
    celery = report["targets"].get(CELERY, {})
    lines = [
        f"Machine: {machine.get('cpu_count')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{machine.get('memory_gb', '?')} GB, Python {machine.get('python')}, "
        f"Celery {machine.get('celery_version', '?')}, SQLite {machine.get('sqlite_version')}; "
        f"outlast {machine.get('outlast_git', '?')}. Run took {report['duration_s']:.0f} s{_waited(report)}"
        f"{' (--quick)' if report['quick'] else ' (--smoke)' if report.get('smoke') else ''}.",
        f"Latency: {settings['latency_samples']} sequential samples after {settings['latency_warmup']} warm-up ones, "
        f"{settings['latency_pause'] * 1000:.0f} ms apart; from time.time() just before the trigger call to "
        "time.time() at the start of the task function (sent back by UDP, so nothing polls meanwhile).",
        f"End-to-end: {settings['throughput_runs']} no-ops triggered in batches of {settings['batch_size']}; "
        "first trigger to last completion. outlast: the runs' completed_at; Celery: a Redis counter "
        "the task increments (INCR + SET in one round trip; cheaper than a result backend), results ignored.",
        f"Trigger rates: single triggers for {settings['trigger_seconds']:g} s each, while the 2 worker slots "
        "execute what was triggered (as in production).",
    ]
    busy = {t["label"]: t.get("background_load_cores") or 0.0 for t in report["targets"].values()}
    for target in report["targets"].values():
        cpu = ((target.get("results") or {}).get("throughput") or {}).get("cpu_seconds") or {}
        if cpu.get("wall_s"):
            busy[target["label"]] = max(busy[target["label"]], cpu.get("rest of the machine", 0.0) / cpu["wall_s"])
    noisy = {label: load for label, load in busy.items() if load >= 0.25}
    if noisy:
        lines.append("WARNING: other processes were busy during the run (cores, before/while measuring): "
                     + ", ".join(f"{label} {load:.2f}" for label, load in noisy.items())
                     + "; these numbers are distorted.")
    for key, _short in OUTLAST:
        phase = ((report["targets"].get(key) or {}).get("results") or {}).get("latency") or {}
        if "created_to_started_p50_ms" in phase:
            lines.append(
                f"{report['targets'][key]['label']} trigger → start, medians of its parts: request → run created "
                f"{phase['request_to_created_p50_ms']:.1f} ms, "
                f"created → claim began {phase['created_to_started_p50_ms']:.1f} ms, "
                f"claim began → task function running (claim transaction + hand-over to the warm process) "
                f"{phase['started_to_task_p50_ms']:.1f} ms.")
    if celery:
        lines.append("* Celery has no batch API: its \"batch\" is group() of apply_async calls, one "
                     "broker message per task.")
    return lines


def print_report(report: dict, console: Console | None = None) -> None:
    console = console or Console()
    header, body = rows(report)
    table = Table(title="outlast vs Celery (this machine)", title_justify="left")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in body:
        table.add_row(*row)
    console.print(table)
    cpu = cpu_rows(report)
    if cpu:
        cpu_table = Table(title="CPU during the end-to-end no-op phase", title_justify="left")
        for index, name in enumerate(CPU_HEADER):
            cpu_table.add_column(name, justify="left" if index < 2 else "right")
        for row in cpu:
            cpu_table.add_row(*row)
        console.print(cpu_table)
    for line in target_checks(report):
        console.print(("[green]" if line.startswith("PASS") else "[red]") + line)
    for target in report["targets"].values():
        if target.get("error"):
            console.print(f"[red]{target['label']} failed:[/red] {target['error']}")
    for line in notes(report):
        console.print(f"[dim]{line}[/dim]")


def markdown(report: dict) -> str:
    def table(header: list[str], body: list[list[str]], right_from: int) -> list[str]:
        align = ["---" if i < right_from else "---:" for i in range(len(header))]
        return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
                *("| " + " | ".join(row) + " |" for row in body)]

    header, body = rows(report)
    lines = ["# outlast vs Celery", "", f"Run at {report['started_at']}.", "", *table(header, body, 1), ""]
    cpu = cpu_rows(report)
    if cpu:
        lines += ["## CPU during the end-to-end no-op phase", "", *table(CPU_HEADER, cpu, 2), ""]
    checks = target_checks(report)
    if checks:
        lines += ["## Targets", "", *(f"- {line}" for line in checks), ""]
    errors = [f"- {t['label']}: {t['error']}" for t in report["targets"].values() if t.get("error")]
    if errors:
        lines += ["## Errors", "", *errors, ""]
    lines += ["## Notes", "", *(f"- {line}" for line in notes(report)), ""]
    return "\n".join(lines)
