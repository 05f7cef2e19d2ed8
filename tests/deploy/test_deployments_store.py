"""Deployments without a runtime process: version numbers, abandoned builds, encrypted env vars."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from outlast._bundle import pack_bundle, plan_bundle
from outlast._project import load_project
from outlast.runtime.access.environments import Environments
from outlast.runtime.deploy.bundles import LocalBundleStore
from outlast.runtime.deploy.deployments import Deployments
from outlast.runtime.deploy.env_vars import EnvVars, load_key
from outlast.runtime.engine import RunEngine
from outlast.runtime.store.db import Database
from outlast.runtime.store.schema import env_vars

from ._projects import write_project


@pytest.fixture
def service(tmp_path, store):
    db = Database(store or f"sqlite:///{tmp_path / 'd.db'}")
    db.migrate()
    Environments(db).bootstrap("ol_dev_test_0123456789abcdef")
    engine = RunEngine(db)
    secrets = EnvVars(db, load_key(tmp_path / "data"))
    yield Deployments(engine, secrets, LocalBundleStore(tmp_path / "bundles"), tmp_path / "data"), secrets, db
    db.dispose()


def test_versions_are_numbered_per_day_and_abandoned_builds_fail(service, tmp_path):
    deployments, _, _ = service
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(pack_bundle(plan_bundle(load_project(write_project(tmp_path / "p", "x")))))
    first = deployments.create("dev", bundle, commit="abc1234def")
    second = deployments.create("prod", bundle)
    assert re.fullmatch(r"\d{8}\.1", first.version) and second.version == first.version[:-1] + "2"
    assert first.status == "BUILDING" and first.git_commit == "abc1234def" and first.files == 1
    deployments.fail_abandoned(older_than=-1)
    failed = deployments.get("dev", first.version)
    assert failed.status == "FAILED" and "did not finish" in failed.error and not failed.current


def test_env_var_values_are_encrypted_at_rest(service):
    _, secrets, db = service
    secrets.set("dev", "API_TOKEN", "tok_live_0123456789")
    with db.connect() as c:
        stored = c.execute(sa.select(env_vars.c.value, env_vars.c.hint)).one()
    assert "tok_live" not in stored.value and stored.hint == "****6789"
    assert secrets.values("dev") == {"API_TOKEN": "tok_live_0123456789"}
    assert secrets.values("prod") == {}
