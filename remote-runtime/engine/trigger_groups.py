"""Group commit of single triggers: concurrent trigger calls share one transaction, each answered after its commit.

A single trigger's cost is mostly fixed: a transaction, its commit (a WAL flush on PostgreSQL, the
write lock on SQLite) and a handful of statements, whatever the number of runs they insert. So one
caller at a time per environment leads: it takes the trigger calls of its environment waiting (its
own first, up to `max_group`), writes their runs as one batch (multi-row statements, one commit)
and gives each call its own answer: its run's handle, or its own error (an unknown task, an
invalid payload), which refuses that call only. The environment's other callers wait for the
leader's commit, and the next of them leads the calls that came meanwhile; other environments'
groups are written meanwhile, on their own connections. No call is answered before the commit
that holds its run, so every acknowledged trigger is durable, as one of its own would be.

The leader waits for company (up to `wait` seconds, or until the group is full) only while calls
come concurrently (the previous group had more than one): a lone, sequential caller is never
delayed. Calls with the same idempotency key in one group behave as in sequence: the first creates
the run, the others get it `is_cached`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from outlast.wire import BatchItem, RunHandle


@dataclass(eq=False)
class TriggerCall:
    """One waiting trigger call: its environment and item, then its answer (`handle` or `error`)."""

    env_id: str
    item: BatchItem
    handle: RunHandle | None = None
    error: BaseException | None = None
    done: bool = False

    def answer(self) -> RunHandle:
        if self.error is not None:
            raise self.error
        assert self.handle is not None
        return self.handle


# write(calls): insert the runs of calls of one environment in one transaction, setting each call's handle
# or error; an exception it raises is the answer of every call it did not answer.
GroupWriter = Callable[[Sequence[TriggerCall]], None]


class TriggerGroups:
    def __init__(self, write: GroupWriter, *, max_group: int = 100, wait: float = 0.001) -> None:
        self._write = write
        self.max_group = max_group
        self.wait = wait
        self._changed = threading.Condition()
        self._pending: list[TriggerCall] = []
        self._leading: set[str] = set()  # environments whose group a caller is gathering or writing
        self._concurrent: set[str] = set()  # environments whose last group had more than one call
        self.groups = 0  # groups written, and calls in them: for tests and the benchmark
        self.calls = 0

    def trigger(self, env_id: str, item: BatchItem) -> RunHandle:
        """Trigger `item` in `env_id` in a shared transaction; returns once that transaction committed."""
        call = TriggerCall(env_id, item)
        with self._changed:
            self._pending.append(call)
            self._changed.notify_all()  # a leader gathering company counts this one
            while env_id in self._leading and not call.done:
                self._changed.wait()
            if call.done:
                return call.answer()
            self._leading.add(env_id)
            group = self._gather(call)
        try:
            self._write(group)
        except Exception as exc:
            for other in group:
                if other.handle is None and other.error is None:
                    other.error = exc
        finally:
            with self._changed:
                for other in group:
                    other.done = True
                self._leading.discard(env_id)
                (self._concurrent.add if len(group) > 1 else self._concurrent.discard)(env_id)
                self.groups, self.calls = self.groups + 1, self.calls + len(group)
                self._changed.notify_all()
        return call.answer()

    def _gather(self, own: TriggerCall) -> list[TriggerCall]:
        """The leader's group (called holding the lock): its own call, then those of its environment waiting."""
        def company() -> list[TriggerCall]:
            return [c for c in self._pending if c is not own and c.env_id == own.env_id][:self.max_group - 1]

        if own.env_id in self._concurrent:
            deadline = time.monotonic() + self.wait
            while len(company()) < self.max_group - 1 and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
        others = company()
        group = [own, *others]
        taken = set(map(id, group))
        self._pending = [c for c in self._pending if id(c) not in taken]
        return group
