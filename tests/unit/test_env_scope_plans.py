"""The scope guard's plans (engine/scope.py): statements of one shape share the walk, never the verdict. A shape
the guard let through for one environment's value is refused, on the next execution, for another's."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from outlast.runtime.engine.scope import EnvScope, UnscopedStatement
from outlast.runtime.store.db import Database
from outlast.runtime.store.schema import runs


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Database:
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('plans') / 'store.db'}")
    database.migrate()
    return database


def test_a_shape_let_through_is_still_refused_for_another_environment(db):
    def shaped(env_id: str) -> sa.Select:  # a new statement each time, of one shape (one cache key)
        return sa.select(runs.c.id).where(runs.c.env_id == env_id, runs.c.task_id == "t")

    with EnvScope(db, "dev").connect() as c:
        for _ in range(2):  # the second run of each goes through the plan the first one made
            c.execute(shaped("dev"))
            with pytest.raises(UnscopedStatement, match="runs"):
                c.execute(shaped("prod"))


def test_execution_parameters_are_checked_on_every_execution(db):
    by_parameter = sa.select(runs.c.id).where(runs.c.env_id == sa.bindparam("env"))
    changed = runs.update().where(runs.c.env_id == sa.bindparam("env"), runs.c.id == sa.bindparam("rid")).values(
        attempts=1)
    with EnvScope(db, "dev").begin() as c:
        for _ in range(2):
            c.execute(by_parameter, {"env": "dev"})
            with pytest.raises(UnscopedStatement, match="runs"):
                c.execute(by_parameter, {"env": "prod"})
            c.execute(changed, [{"env": "dev", "rid": "a"}, {"env": "dev", "rid": "b"}])
            with pytest.raises(UnscopedStatement, match="runs"):  # one row of an executemany is another's
                c.execute(changed, [{"env": "dev", "rid": "a"}, {"env": "prod", "rid": "b"}])
        c.rollback()
