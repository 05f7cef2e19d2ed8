"""A runtime shared by all tests of one module, per store, for tests that need no runtime of their own.

Starting a runtime costs seconds; tests that only trigger and read runs share one and keep apart
by their own tags, queues and idempotency keys. Use it in a module with
`shared_runtime = shared_runtime_fixture()`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PG_ADMIN_URL, RuntimeProcess, _create_pg_database, _drop_pg_database, runtime_process


def shared_runtime_fixture(project: str = "basic", slots: int = 2, extra_env: dict[str, str] | None = None):
    @pytest.fixture(scope="module", params=["sqlite", "postgres"])
    def shared_runtime(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                       ) -> Iterator[RuntimeProcess]:
        database = _create_pg_database() if request.param == "postgres" else None
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database if database else None
        runtime = runtime_process(tmp_path_factory.mktemp("shared-runtime"), url, project=project, slots=slots,
                                  node_id="node-shared", extra_env=extra_env)
        try:
            yield runtime.start()
        finally:
            runtime.close()
            if database:
                _drop_pg_database(database)

    return shared_runtime


def prod_key(runtime: RuntimeProcess) -> str:
    """The prod environment's secret key, which the runtime prints once when it creates it."""
    match = re.search(r"\bprod\s+OUTLAST_SECRET_KEY=(\S+)", runtime.log())
    assert match, f"no prod key in the runtime's log:\n{runtime.log()}"
    return match.group(1)


class CountingTransport(httpx.HTTPTransport):
    """Counts the HTTP requests a client sends."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


def lines(path: Path) -> list[str]:
    """The lines of a marker file a test task appends to; none while it does not exist."""
    return path.read_text().splitlines() if path.exists() else []


def process_gone(pid: int) -> bool:
    """True once the process has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # reaped before the open, or between open and read
        return True
