"""The realtime hub, started by a first subscription, stops with the runtime's lifespan: its reader task
ends and its LISTEN and NOTIFY threads are joined, their PostgreSQL connections closed (a real store;
the app in process, so that what it left behind can be looked at)."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from outlast.runtime.api.app import create_app
from outlast.runtime.settings import RuntimeSettings
from outlast.runtime.state import RuntimeState
from tests.conftest import SECRET_KEY


def listening(database_url: str) -> int:
    """Backends of this database that LISTEN for the hub's channel."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND query = 'LISTEN outlast_events'").fetchone()[0]


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_the_hub_stops_with_the_runtime(tmp_path, store):
    state = RuntimeState(RuntimeSettings(data_dir=tmp_path / "data", database_url=store, dev_key=SECRET_KEY,
                                         checkpoints="off"))
    app = create_app(state)
    with TestClient(app) as http:
        # Any realtime route starts the hub (this one then answers 404: no such run).
        answer = http.get("/api/v1/runs/run_none/streams", headers={"Authorization": f"Bearer {SECRET_KEY}"})
        assert answer.status_code == 404
        hub = app.state.outlast_realtime.hub
        threads = list(hub._threads)
        assert hub._task is not None and len(threads) == 2 and all(t.is_alive() for t in threads)
        assert listening(store) == 1
    assert hub._task is None and hub._keepalive_task is None
    assert not any(t.is_alive() for t in threads), "the LISTEN and NOTIFY threads were joined"
    assert listening(store) == 0
