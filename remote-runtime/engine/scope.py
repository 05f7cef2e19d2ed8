"""One environment's view of the store: the one place that seals environments from each other.

Whatever a caller (an API key, a dashboard session, a task acting for its run) reads or changes goes
through an `EnvScope` built from the authenticated environment: its connections (`connect`, `begin`)
and its statement builders (`select`, `update`, `delete`, `where`), which add `env_id = <env>` for
every scoped table a statement reads or changes. A scoped table is any table with an `env_id`
column (found from the schema, so a new table is covered the day it is added).

On a scope's connection a guard checks every SELECT, UPDATE and DELETE before it runs: each scoped
table it names must be limited to this environment by a term of a WHERE clause's top-level AND
(`env_id = :env` or `env_id IN (:env)`, bound values or execution parameters; an OR limits nothing).
One that is not raises `UnscopedStatement`
instead of running, so a forgotten condition fails the first time its path runs, in any test.
(INSERTs are the writer's own rows and are not read, nor is raw SQL text: caller-facing code has none
that reads a scoped table.)

Tables without `env_id` (a run's events, waits, checkpoints, stream chunks, a bulk job's list) are
children of a scoped row: they are reached by ids the scope has already resolved. So are the queue
and wait cascades of runs the scope has found (`following_ids`): code written for every environment
at once (store/queue.py, the completion of waitpoints) that keys its statements by those ids.

Maintenance and worker paths that span environments by design (timers, the scheduler, bulk jobs'
chunks, claims and completions keyed by run and node) use the store's own connections.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BooleanClauseList, Grouping

from ..store.db import Database
from ..store.schema import metadata

_INFO_KEY = "outlast.env_scope"


@functools.cache
def scoped_tables() -> frozenset[sa.Table]:
    """The tables whose rows belong to one environment: those with an `env_id` column."""
    return frozenset(table for table in metadata.tables.values() if "env_id" in table.c)


class UnscopedStatement(RuntimeError):
    """A statement on a scope's connection reads or changes a scoped table without its environment."""


class EnvScope:
    """What environment `env_id` may see of the store, and nothing else."""

    def __init__(self, db: Database, env_id: str) -> None:
        self.db = db
        self.env_id = env_id
        install_guard(db.engine)

    # --- connections: the guard checks what runs on them ------------------------------------------

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A read connection on which only this environment's rows can be read."""
        with self.db.connect() as c, self.guard(c):
            yield c

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A write transaction on which only this environment's rows can be read or changed."""
        with self.db.begin() as c, self.guard(c):
            yield c

    @contextlib.contextmanager
    def guard(self, c: sa.Connection) -> Iterator[None]:
        """Guard `c` (a connection of another pool of the same store: the realtime hub's) for this block."""
        install_guard(c.engine)
        # `info` lives with the pooled connection: it must not outlast this checkout.
        previous = c.info.get(_INFO_KEY)
        c.info[_INFO_KEY] = self.env_id
        try:
            yield
        finally:
            _restore(c, previous)

    @staticmethod
    @contextlib.contextmanager
    def following_ids(c: sa.Connection) -> Iterator[None]:
        """Statements keyed by ids this scope already resolved (the ready rows, slots and waits of runs it
        found), written for every environment at once: the guard lets them through, for this block only."""
        previous = c.info.get(_INFO_KEY)
        c.info[_INFO_KEY] = None
        try:
            yield
        finally:
            _restore(c, previous)

    # --- statements: each scoped table they name, constrained to this environment -----------------

    def owns(self, table: sa.Table | sa.FromClause) -> sa.ColumnElement[bool]:
        """The condition that a row of `table` is this environment's (for joins and subqueries)."""
        return table.c.env_id == self.env_id

    def select(self, *what: Any) -> sa.Select:
        return self.where(sa.select(*what))

    def update(self, table: sa.Table) -> sa.Update:
        return table.update().where(self.owns(table))

    def delete(self, table: sa.Table) -> sa.Delete:
        return table.delete().where(self.owns(table))

    def where(self, stmt: sa.Select) -> sa.Select:
        """`stmt` with this environment's condition on every scoped table in its FROM list."""
        scoped = scoped_tables()
        froms = {table for from_ in stmt.get_final_froms() for table in sa.sql.util.find_tables(from_)
                 if table in scoped}
        return stmt.where(*(self.owns(table) for table in sorted(froms, key=lambda t: t.name)))


# --- the guard ---------------------------------------------------------------------------------------


def _restore(c: sa.Connection, previous: str | None) -> None:
    # An invalidated connection (the database went away mid-block) has no `info` to restore, and reaching for it
    # would raise PendingRollbackError over the error that is on its way out (which the API answers with a 503).
    if not c.invalidated:
        c.info[_INFO_KEY] = previous


def install_guard(engine: sa.Engine) -> None:
    """Check every statement run on a scope's connection of `engine` (once per engine)."""
    if not sa.event.contains(engine, "before_execute", _check):
        sa.event.listen(engine, "before_execute", _check)


def _check(c: sa.Connection, statement: Any, multiparams: Sequence[Any], params: Mapping[str, Any],
           _options: Mapping[str, Any]) -> None:
    env_id = c.info.get(_INFO_KEY)
    if env_id is None:
        return
    if isinstance(statement, sa.Insert):  # a new row is the writer's own; only an INSERT ... SELECT reads
        statement = statement.select
    if not isinstance(statement, sa.Select | sa.Update | sa.Delete | sa.CompoundSelect):
        return
    named, seals = _plan(statement)
    parameter_sets = _parameter_sets(multiparams, params)
    sealed = {table for table, bind in seals if _bound_to(bind, env_id, parameter_sets)}
    missing = sorted(table.name for table in named - sealed)
    if missing:
        raise UnscopedStatement(f"a statement on {', '.join(missing)} is not limited to environment {env_id!r}; "
                                f"build it with the EnvScope (engine/scope.py): {str(statement)[:200]}")


# A statement's shape -> its plan with each seal's bind as a position in the cache key's bind list. The walk costs
# ~80 us a SELECT; statements of one shape (same cache key, which SQLAlchemy memoizes and compiles with) share the
# tables named and where env_id is bound, and only the values, checked on every execution, differ.
_plans: dict[Any, tuple[frozenset[sa.Table], tuple[tuple[sa.Table, int], ...]]] = {}
_MAX_PLANS = 2000

Plan = tuple[frozenset[sa.Table], list[tuple[sa.Table, sa.BindParameter[Any]]]]


def _plan(statement: Any) -> Plan:
    """The scoped tables `statement` names, and each `env_id = <bind>` term of a top-level AND that may seal one."""
    key = statement._generate_cache_key()  # noqa: SLF001 - the key SQLAlchemy compiles with (memoized); no public name
    if key is not None and (cached := _plans.get(key.key)) is not None:
        named, positions = cached
        return named, [(table, key.bindparams[index]) for table, index in positions]
    named, seals = _walk(statement)
    if key is not None:
        index = {id(bind): i for i, bind in enumerate(key.bindparams)}
        if all(id(bind) in index for _, bind in seals):  # else the plan could not find the binds again
            if len(_plans) >= _MAX_PLANS:
                _plans.clear()
            _plans[key.key] = (named, tuple((table, index[id(bind)]) for table, bind in seals))
    return named, seals


def _walk(statement: Any) -> Plan:
    named, seals = set(), []
    scoped = scoped_tables()
    for element in visitors.iterate(statement):
        if isinstance(element, sa.Table) and element in scoped:
            named.add(element)
        elif isinstance(element, sa.Select | sa.Update | sa.Delete) and element.whereclause is not None:
            for condition in _conjuncts(element.whereclause):  # an OR or a NOT limits nothing
                table = _scoped_env_column(condition, scoped)
                bind = _right_bind(condition) if table is not None else None
                if bind is not None:
                    seals.append((table, bind))
    return frozenset(named), seals


def _parameter_sets(multiparams: Sequence[Any], params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The execution's parameter sets: one per row of an executemany, else the single one."""
    return [p for p in multiparams if isinstance(p, Mapping)] or [params or {}]


def _conjuncts(condition: sa.ColumnElement[Any]) -> Iterator[sa.ColumnElement[Any]]:
    """The parts of a WHERE clause that must all hold (the terms of its top-level AND)."""
    while isinstance(condition, Grouping):
        condition = condition.element
    if isinstance(condition, BooleanClauseList) and condition.operator is operators.and_:
        for clause in condition.clauses:
            yield from _conjuncts(clause)
    else:
        yield condition


def _scoped_env_column(expression: sa.ColumnElement[Any], scoped: frozenset[sa.Table]) -> sa.Table | None:
    if not isinstance(expression, sa.BinaryExpression):
        return None
    column = expression.left
    if expression.operator not in (operators.eq, operators.in_op) or not isinstance(column, sa.Column):
        return None
    return column.table if column.name == "env_id" and column.table in scoped else None


def _right_bind(expression: sa.BinaryExpression[Any]) -> sa.BindParameter[Any] | None:
    """The bound value on the right of `env_id = ...` / `env_id IN (...)`; None for another column (a join's
    condition), which says nothing of which environment."""
    bind = expression.right
    while isinstance(bind, Grouping):
        bind = bind.element
    return bind if isinstance(bind, sa.BindParameter) else None


def _bound_to(bind: sa.BindParameter[Any], env_id: str, parameter_sets: Iterable[Mapping[str, Any]]) -> bool:
    """Whether `bind` (of `env_id = :bind`) holds `env_id` alone, in this execution."""
    if bind.value is not None or bind.callable is not None:
        values = [bind.effective_value]
    else:
        values = [parameters.get(bind.key) for parameters in parameter_sets]
    flat = [v for value in values for v in (value if isinstance(value, list | tuple | set) else [value])]
    return bool(flat) and all(v == env_id for v in flat)
