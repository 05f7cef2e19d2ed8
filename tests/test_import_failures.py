"""A dev worker's import failure as the runtime keeps it (engine/registration.py): per environment and
node, ended by the node's next good registration, and no longer speaking once the node is gone."""

from __future__ import annotations

from pathlib import Path

from outlast.runtime.access.environments import Environments
from outlast.runtime.engine import RunEngine
from outlast.runtime.store.db import Database
from outlast.wire import TaskManifest


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_import_failure_lasts_until_the_node_registers_again_or_is_gone(tmp_path: Path, store: str | None) -> None:
    db = Database(store or f"sqlite:///{tmp_path / 'engine.db'}")
    db.migrate()
    Environments(db).bootstrap("ol_dev_import_failures_key_01")
    clock = Clock()
    engine = RunEngine(db, clock=clock, lease_seconds=30)
    registration = engine.registration
    try:
        registration.import_failed(["dev"], "laptop", "Traceback ...\nImportError: nosuch")
        assert registration.import_failure("dev") == "Traceback ...\nImportError: nosuch"  # before a heartbeat
        assert registration.import_failure("dev", "laptop") is not None
        assert registration.import_failure("prod") is None and registration.import_failure("prod", "laptop") is None

        registration.register(["dev"], "v2", [TaskManifest(id="greet")], node_id="laptop")
        assert registration.import_failure("dev") is None, "a good registration ends it"

        registration.import_failed(["dev"], "laptop", "ImportError: again")
        engine.nodes.seen("laptop", "incarnation-1", ["dev"])
        clock.now += 20
        assert registration.import_failure("dev") == "ImportError: again", "the node heartbeats: it speaks"
        clock.now += 20
        assert registration.import_failure("dev") is None, "no heartbeat for longer than the lease: gone"
        assert registration.import_failure("dev", "laptop") == "ImportError: again"  # its own view still says why
    finally:
        db.dispose()
