"""A tasks module that opens things at import, as real projects do. Used by tests/test_imported_resources.py.

Files, an sqlite3 connection and a UDP socket are used straight from import; the PostgreSQL
connection is reopened in the hooks (a protocol connection must not be shared between processes);
the SQLAlchemy engine's pool is left to outlast, which disposes what the fork server's import made.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, text

from outlast import on_process_start, on_resume, task, wait

SCRATCH = Path(os.environ["OUTLAST_TEST_SCRATCH"])
PG_URL = os.environ["RESOURCES_PG_URL"]
TABLE = os.environ["RESOURCES_PG_TABLE"]
UDP_PORT = int(os.environ["RESOURCES_UDP_PORT"])

log = logging.getLogger("resources")
log.addHandler(logging.FileHandler(SCRATCH / "tasks.log"))
log.setLevel(logging.INFO)
rows = sqlite3.connect(SCRATCH / "rows.sqlite3", timeout=30, isolation_level=None)
rows.execute("CREATE TABLE IF NOT EXISTS row (run TEXT, step TEXT, process TEXT, pad BLOB)")
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
journal = open(SCRATCH / "journal.txt", "a")  # noqa: SIM115 - the module's for good
journal.write("imported\n")  # buffered: it must reach the file once, not once per task process
pg = psycopg.connect(PG_URL, autocommit=True)
idle_tcp = socket.create_connection(("127.0.0.1", 5432))  # held, never used: CRIU dumps it (closed) with the rest
engine = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
with engine.connect() as connection:  # leaves a pooled connection made by the importing process
    (SCRATCH / "import-backend.txt").write_text(str(connection.execute(text("SELECT pg_backend_pid()")).scalar()))


def _process() -> str:
    return os.environ["OUTLAST_PROCESS_ID"]


def _hook_line(what: str) -> None:
    with open(SCRATCH / "hooks.txt", "a") as handle:
        handle.write(f"{what} {_process()}\n")


@on_process_start
def reconnect_postgres() -> None:
    global pg
    pg = psycopg.connect(PG_URL, autocommit=True)
    _hook_line("start")


@on_resume
def reconnect_postgres_after_restore() -> None:
    global pg
    if (SCRATCH / "fail-resume").exists():
        raise RuntimeError("the database is not there")
    pg = psycopg.connect(PG_URL, autocommit=True)
    _hook_line("resume")


def _use_everything(run: str, step: str) -> dict:
    log.info("%s %s", run, step)
    # A page or two a row: the file grows while a checkpointed process is frozen, as a real one would.
    rows.execute("INSERT INTO row VALUES (?, ?, ?, ?)", (run, step, _process(), bytes(6000)))
    udp.sendto(f"{run} {step}".encode(), ("127.0.0.1", UDP_PORT))
    journal.write(f"{run} {step}\n")
    journal.flush()
    backend = pg.execute(f"INSERT INTO {TABLE} (run, step) VALUES (%s, %s) RETURNING pg_backend_pid()",
                         (run, step)).fetchone()[0]
    with engine.connect() as connection:
        engine_backend = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    return {"process": _process(), "backend": backend, "engine_backend": engine_backend}


@task(id="use-imported", retry={"max_attempts": 1})
def use_imported(payload: dict, ctx) -> dict:
    before = _use_everything(ctx.run_id, "before")
    if not payload.get("wait"):
        return {"before": before}
    wait.for_(seconds=payload["wait"])
    return {"before": before, "after": _use_everything(ctx.run_id, "after")}


@task(id="catches-everything", retry={"max_attempts": 1})
async def catches_everything(payload: dict) -> str:
    try:
        await wait.for_(seconds=payload["wait"])
    except Exception:  # a task that swallows errors still fails when a hook did
        return "swallowed"
    return "waited"
