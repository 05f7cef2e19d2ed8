"""The environment scope (engine/scope.py): on a scope's connection no statement reaches a scoped table
without being limited to the scope's environment, whoever built it; the scope's own statements see
only its environment's rows. On a real SQLite store (the guard reads statements, not the database)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from outlast.runtime.engine.scope import EnvScope, UnscopedStatement, scoped_tables
from outlast.runtime.store.db import Database
from outlast.runtime.store.schema import queue_keys, queues, run_events, run_tags, runs, waitpoints

RUNTIME = Path(__file__).resolve().parents[2] / "remote-runtime"


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Database:
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('scope') / 'store.db'}")
    database.migrate()
    with database.begin() as c:
        for env_id in ("dev", "prod"):
            c.execute(queues.insert().values(env_id=env_id, name=f"queue-{env_id}"))
            c.execute(queue_keys.insert().values(env_id=env_id, queue="q", concurrency_key="", last_seq=0, running=1))
    return database


def test_every_table_with_an_environment_is_scoped():
    assert {runs, run_tags, waitpoints, queue_keys} <= scoped_tables()
    assert run_events not in scoped_tables()  # a child of runs: reached by the id of a run the scope found
    assert all("env_id" in table.c for table in scoped_tables())


@pytest.mark.parametrize("table", sorted(scoped_tables(), key=lambda t: t.name), ids=lambda t: t.name)
def test_a_statement_without_the_scope_raises_on_its_connection(db, table):
    scope = EnvScope(db, "dev")
    unscoped = [sa.select(table), table.update().values(env_id="dev"), table.delete(),
                sa.select(table).where(table.c.env_id == "prod"),  # another environment's
                sa.select(table).where(table.c.env_id.in_(["dev", "prod"])),  # and more than its own
                sa.select(table).where(table.c.env_id != "prod"),
                sa.select(table).where(sa.or_(table.c.env_id == "dev", table.c.env_id == "prod")),  # limits nothing
                sa.select(table).where(sa.not_(sa.and_(table.c.env_id == "dev", table.c.env_id == "dev"))),
                sa.select(sa.func.count()).select_from(sa.select(table).subquery())]
    with scope.begin() as c:
        for statement in unscoped:
            with pytest.raises(UnscopedStatement, match=table.name):
                c.execute(statement)
        for statement in (scope.select(table), scope.update(table).values(env_id="dev"), scope.delete(table)):
            c.execute(statement)
        c.rollback()


def test_the_scope_sees_its_own_rows_only(db):
    for env_id in ("dev", "prod"):
        scope = EnvScope(db, env_id)
        with scope.connect() as c:
            assert c.execute(scope.select(queues.c.name)).scalars().all() == [f"queue-{env_id}"]
            # A join: the condition is on every scoped table of the FROM list.
            joined = scope.where(sa.select(queues.c.env_id, queue_keys.c.env_id).join(
                queue_keys, queue_keys.c.queue == "q"))
            assert c.execute(joined).all() == [(env_id, env_id)]


def test_bound_environments_are_checked_per_row(db):
    scope = EnvScope(db, "dev")
    by_key = queue_keys.update().where(queue_keys.c.env_id == sa.bindparam("b_env")).values(running=2)
    with scope.begin() as c:
        c.execute(by_key, [{"b_env": "dev"}])
        with pytest.raises(UnscopedStatement):
            c.execute(by_key, [{"b_env": "dev"}, {"b_env": "prod"}])
        c.rollback()


def test_only_the_scope_connection_is_guarded_and_only_while_it_is_held(db):
    scope = EnvScope(db, "dev")
    with scope.connect() as c:
        with scope.following_ids(c):  # a cascade by ids the scope resolved: written for every environment
            c.execute(sa.select(queues))
        with pytest.raises(UnscopedStatement):
            c.execute(sa.select(queues))
    with db.connect() as c:  # the maintenance loops' connections span environments by design
        assert len(c.execute(sa.select(queues)).all()) == 2


def test_a_new_row_is_the_writer_s_own_but_an_insert_from_select_reads(db):
    scope = EnvScope(db, "dev")
    with scope.begin() as c:
        c.execute(queues.insert().values(env_id="dev", name="new"))
        copy = queues.insert().from_select(["env_id", "name"], sa.select(queues.c.env_id, queues.c.name + "-copy"))
        with pytest.raises(UnscopedStatement):
            c.execute(copy)
        c.rollback()


# Routers and pages answer callers: they open no connection of the store's, only a scope's.
CALLER_FACING = ["api/runs.py", "api/schedules.py", "api/queues.py", "api/waitpoints.py", "api/bulk_actions.py",
                 "api/deployments.py", "api/keys.py", "api/streams.py", "dashboard/pages.py",
                 "dashboard/actions.py", "engine/overview.py", "engine/control.py"]


@pytest.mark.parametrize("module", CALLER_FACING)
def test_caller_facing_modules_reach_the_store_through_a_scope(module):
    source = (RUNTIME / module).read_text()
    assert not re.findall(r"\bdb\.(connect|begin)\(|\.engine\.(connect|begin)\(", source), module


# A function that takes an `env_id` acts for that environment: it opens connections through its scope.
# The exceptions, each for a reason: environments' own rows (keys, current version) are keyed by their id,
# not an env_id column; a callback URL's token is looked up across environments by its id first; a
# deployment's builder reads versions of any environment.
OPENS_ITS_OWN = {("access/environments.py", "rotate"), ("access/public_tokens.py", "_key"),
                 ("deploy/deployments.py", "_current"), ("deploy/deployments.py", "_row"),
                 ("engine/waits.py", "complete_token")}


def test_functions_acting_for_an_environment_open_no_connection_but_its_scope_s():
    found = set()
    for path in sorted(RUNTIME.glob("**/*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            takes_env = isinstance(node, ast.FunctionDef) and "env_id" in {
                a.arg for a in node.args.args + node.args.kwonlyargs}
            if takes_env and re.search(r"\b(db|engine)\.(connect|begin)\(", ast.get_source_segment(source, node)):
                found.add((path.relative_to(RUNTIME).as_posix(), node.name))
    assert found - OPENS_ITS_OWN == set(), "open connections through `EnvScope(db, env_id)` (engine/scope.py)"


def test_a_connection_lost_in_a_scope_raises_its_own_error(db):
    # A database restart invalidates the connection mid-block: the error on its way out (answered with a 503)
    # must not be replaced by SQLAlchemy's PendingRollbackError from the scope's clean-up (a 500).
    class DatabaseWentAway(Exception):
        pass

    for opened in (EnvScope(db, "dev").begin, EnvScope(db, "dev").connect):
        with pytest.raises(DatabaseWentAway), opened() as c:
            c.invalidate()
            raise DatabaseWentAway
    # The pool hands out a working, guarded connection again.
    with EnvScope(db, "dev").connect() as c, pytest.raises(UnscopedStatement):
        c.execute(sa.select(runs))


def test_a_connection_of_another_pool_is_guarded_for_the_block(db):
    # The realtime hub reads from its own pool: a subscriber's reads run on its connections under `guard`.
    engine = sa.create_engine(db.url)
    scope = EnvScope(db, "dev")
    try:
        with engine.connect() as c:
            with scope.guard(c):
                with pytest.raises(UnscopedStatement):
                    c.execute(sa.select(queues))
                assert c.execute(scope.select(queues.c.name)).scalars().all() == ["queue-dev"]
            assert len(c.execute(sa.select(queues)).all()) == 2  # the hub's own poll reads every environment
    finally:
        engine.dispose()
