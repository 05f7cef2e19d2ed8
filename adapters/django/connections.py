"""Django's database connections in task processes, handled as Django's own request cycle does.

A task process is forked from a fork server that set Django up and imported the tasks; a
connection opened then would be shared by every task process, so each one closes its copy
before its first attempt (the fork server never uses it again, so closing it costs nothing). Around every
attempt `close_old_connections` runs, as on Django's request_started and request_finished:
a connection past CONN_MAX_AGE or left broken is replaced. After a restore from a checkpoint
the connections are closed too (CRIU brings TCP connections back closed).
"""

from __future__ import annotations

import contextlib

from django.db import DatabaseError, close_old_connections, connections

from outlast import _hooks


def close_all() -> None:
    """Close this thread's database connections (Django opens new ones on the next query)."""
    for connection in connections.all():
        with contextlib.suppress(DatabaseError):  # a connection restored closed may complain
            connection.close()


def recycle_connections() -> None:
    """Register the task process hooks; called by the task process before django.setup()."""
    _hooks.on_process_start(close_all)
    _hooks.on_resume(close_all)
    _hooks.on_each_attempt(close_old_connections)
