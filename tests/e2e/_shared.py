"""A runtime shared by all tests of one module, per store, for tests that need no runtime of their own.

Starting a runtime costs seconds; tests that only trigger and read runs share one and keep apart
by their own tags, queues and idempotency keys. Use it in a module with
`shared_runtime = shared_runtime_fixture()`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import (
    PG_ADMIN_URL,
    PROJECTS,
    SECRET_KEY,
    RuntimeProcess,
    _create_pg_database,
    _drop_pg_database,
    free_port,
)


def shared_runtime_fixture(project: str = "basic", slots: int = 2):
    @pytest.fixture(scope="module", params=["sqlite", "postgres"])
    def shared_runtime(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                       ) -> Iterator[RuntimeProcess]:
        tmp = tmp_path_factory.mktemp("shared-runtime")
        scratch = tmp / "scratch"
        scratch.mkdir()
        database = _create_pg_database() if request.param == "postgres" else None
        port = free_port()
        args = [sys.executable, "-m", "outlast.cli", "runtime", "--port", str(port), "--slots", str(slots),
                "--data-dir", str(tmp / "data"), "--node-id", "node-shared", "--project", str(PROJECTS / project)]
        if database:
            args += ["--database-url", PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database]
        env = {**os.environ, "OUTLAST_SECRET_KEY": SECRET_KEY, "OUTLAST_TEST_SCRATCH": str(scratch),
               "OUTLAST_HEARTBEAT_INTERVAL": "0.5", "OUTLAST_CANCEL_GRACE": "2"}
        env.pop("OUTLAST_DATABASE_URL", None)
        runtime = RuntimeProcess(args=args, env=env, url=f"http://127.0.0.1:{port}", scratch=scratch,
                                 log_path=tmp / "runtime.log")
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
