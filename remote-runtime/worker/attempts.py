"""The attempts a node holds a lease on: each one's record (`Execution`) and the set of them."""

from __future__ import annotations

import asyncio
import collections
import time

from outlast.wire import Assignment, LeasedAttempt, WaitpointResult
from outlast.wire.machines import DEFAULT_MACHINE, MACHINES, Machine, machine_preset

from .cgroups import Usage
from .processes import TaskProcess

DEFAULT_CHECKPOINT_AFTER = 5.0


class Execution:
    """One claimed attempt: its deadlines, the waits it is in, and where it is (queued, running, parked)."""

    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.context = assignment.context
        self.started = time.monotonic()
        self.stop_reason: str | None = None  # set when the runtime asked us to stop it
        self.process: TaskProcess | None = None
        self.checkpoint_after = DEFAULT_CHECKPOINT_AFTER
        self.waiting: set[str] = set()  # waitpoints the task waits for
        self.suspend_at: float | None = None  # monotonic time at which a still-pending wait suspends it
        self.draining = False  # its node drains: checkpoint it now, waiting or not (worker/drain.py)
        self.changed = asyncio.Event()  # wakes the attempt's loop: a wait began or ended
        self.parked_since: float | None = None  # kept alive outside the slots while it waits
        self.parked_seconds = 0.0
        self.held_results: list[WaitpointResult] = []  # completed while parked, handed in on resume
        self.machine = _machine_or_none(self.context.machine)  # None: a preset this node does not know
        self.usage_start: Usage | None = None  # its process's cgroup counters when it started here
        # What it used before its last checkpoint (carried in the checkpoint's detail), in other processes.
        self.used_before: dict[str, int] = {}

    @property
    def leased(self) -> LeasedAttempt:
        return LeasedAttempt(run_id=self.context.run_id, attempt=self.context.attempt, waiting=sorted(self.waiting))

    @property
    def parked(self) -> bool:
        return self.parked_since is not None

    def active_seconds(self) -> float:
        """Time this attempt spent running here: parked waits do not count (nor against max_duration)."""
        parked = self.parked_seconds + (time.monotonic() - self.parked_since if self.parked_since else 0.0)
        return time.monotonic() - self.started - parked

    def remaining_seconds(self) -> float | None:
        if self.context.max_duration is None:
            return None
        return self.context.max_duration - self.assignment.execution_ms / 1000 - self.active_seconds()

    def seconds_to_next_deadline(self) -> float | None:
        """Until max_duration runs out or a pending wait is due to suspend it; None: no deadline (parked)."""
        if self.parked:
            return None
        deadlines = []
        remaining = self.remaining_seconds()
        if remaining is not None:
            deadlines.append(remaining)
        if self.suspend_at is not None:
            deadlines.append(self.suspend_at - time.monotonic())
        return max(0.0, min(deadlines)) if deadlines else None

    def out_of_time(self) -> bool:
        remaining = self.remaining_seconds()
        return remaining is not None and remaining <= 0

    def suspension_due(self) -> bool:
        """Whether a wait that was still pending at its `suspend_at` should suspend it now (asked once)."""
        if self.suspend_at is None or time.monotonic() < self.suspend_at:
            return False
        self.suspend_at = None
        return bool(self.waiting)


def _machine_or_none(name: str | None) -> Machine | None:
    try:
        return machine_preset(name)
    except ValueError:
        return None


class Attempts:
    """Every attempt this node holds a lease on: claimed ones queued for a slot (the backlog), running
    ones, and parked ones (alive in a wait, outside the slots)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.executions: dict[str, Execution] = {}
        self.backlog: collections.deque[Execution] = collections.deque()  # claimed, waiting for a slot
        self.slot_freed = asyncio.Event()  # wakes the dispatcher: a slot (or an idle process) may be free
        self.recent_seconds: float | None = None  # moving average of attempt durations

    @property
    def running(self) -> int:
        """Attempts that hold a slot: not queued in the backlog, not parked in a wait."""
        return len(self.executions) - len(self.backlog) - sum(e.parked for e in self.executions.values())

    @property
    def slots_in_use(self) -> float:
        """Slots the running attempts take: each as many as its machine preset is default presets."""
        return sum(self.slots_needed(e.machine) for e in self.executions.values()
                   if not e.parked and e not in self.backlog)

    def slots_needed(self, machine: Machine | None) -> float:
        """A preset's size in default presets (micro: half a slot, large-1x: 16), at most the whole node."""
        if machine is None:
            return 1.0
        default = MACHINES[DEFAULT_MACHINE]
        return min(float(self.slots), max(machine.cpus / default.cpus, machine.memory_gb / default.memory_gb))

    def claimed(self, assignment: Assignment) -> None:
        execution = Execution(assignment)
        self.executions[execution.context.run_id] = execution
        self.backlog.append(execution)

    def next_to_start(self) -> Execution | None:
        """The next queued attempt, if enough slots are free for its machine preset (in claim order: a
        large preset waits for its slots rather than being overtaken for ever)."""
        if not self.backlog or self.slots_in_use + self.slots_needed(self.backlog[0].machine) > self.slots + 1e-9:
            return None
        execution = self.backlog.popleft()
        execution.started = time.monotonic()
        return execution

    def drop_unstarted(self, run_id: str) -> bool:
        """Forget a queued attempt (canceled before it started); False if it is not queued."""
        execution = self.executions.get(run_id)
        if execution is None or execution not in self.backlog:
            return False
        self.backlog.remove(execution)
        del self.executions[run_id]
        return True

    def take_backlog(self) -> list[Execution]:
        """Empty the backlog (when stopping); the attempts returned were never started."""
        unstarted = list(self.backlog)
        self.backlog.clear()
        return unstarted

    def finished(self, execution: Execution) -> None:
        self.executions.pop(execution.context.run_id, None)
        self.slot_freed.set()

    def record_duration(self, seconds: float) -> None:
        self.recent_seconds = seconds if self.recent_seconds is None else 0.8 * self.recent_seconds + 0.2 * seconds
