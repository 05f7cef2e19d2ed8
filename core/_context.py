"""What task code reaches while it runs: `logger` and `metadata`, bound to the active attempt.

The task process binds a channel (its connection to the supervisor) for the duration of an
attempt; outside a run, `logger` falls back to the standard library and `metadata` refuses.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import TypeAdapter

from ._errors import OutlastError
from .wire import LogRecord, MetadataOp, MetadataUpdate, RunContext

_json = TypeAdapter(Any)
_fallback_logger = logging.getLogger("outlast.task")


class RunChannel(Protocol):
    def send_log(self, record: LogRecord) -> None: ...
    def send_metadata(self, update: MetadataUpdate) -> None: ...


class _ActiveRun:
    def __init__(self, context: RunContext, channel: RunChannel, checkpoint_after: float) -> None:
        self.context = context
        self.channel = channel
        self.checkpoint_after = checkpoint_after
        self.metadata: dict[str, Any] = dict(context.metadata)


# One attempt at a time per task process, reachable from any thread the task starts.
_active: _ActiveRun | None = None


def bind(context: RunContext, channel: RunChannel, checkpoint_after: float = 5.0) -> None:
    global _active
    _active = _ActiveRun(context, channel, checkpoint_after)


def unbind() -> None:
    global _active
    _active = None


def current_run() -> RunContext | None:
    return _active.context if _active else None


def active_run() -> _ActiveRun | None:
    """The attempt this task process runs now, with its channel to the supervisor (None outside a run)."""
    return _active


def emit_log(level: str, message: str, attributes: dict[str, Any] | None = None) -> bool:
    """Send a log line to the active run's timeline; False when no run is active."""
    active = _active
    if active is None:
        return False
    record = LogRecord(
        run_id=active.context.run_id,
        attempt=active.context.attempt,
        level=level,
        message=message,
        attributes=_json.dump_python(attributes or {}, mode="json", fallback=repr),
        time=datetime.now(UTC),
    )
    active.channel.send_log(record)
    return True


class TaskLogger:
    """`logger.info("resized", width=800)`: a line with attributes in the run's timeline."""

    def _log(self, level: str, message: str, attributes: dict[str, Any]) -> None:
        if not emit_log(level, str(message), attributes):
            _fallback_logger.log(logging.getLevelName(level.upper()), "%s %s", message, attributes or "")

    def debug(self, message: str, **attributes: Any) -> None:
        self._log("debug", message, attributes)

    def info(self, message: str, **attributes: Any) -> None:
        self._log("info", message, attributes)

    def warn(self, message: str, **attributes: Any) -> None:
        self._log("warn", message, attributes)

    warning = warn

    def error(self, message: str, **attributes: Any) -> None:
        self._log("error", message, attributes)


class RunMetadata:
    """Live key/value metadata of the active run; every change reaches the run at once."""

    def _run(self) -> _ActiveRun:
        if _active is None:
            raise OutlastError("metadata can only be changed inside a running task")
        return _active

    def _apply(self, op: MetadataOp) -> None:
        active = self._run()
        apply_metadata_op(active.metadata, op)
        active.channel.send_metadata(MetadataUpdate(run_id=active.context.run_id, ops=[op]))

    def set(self, key: str, value: Any) -> None:
        self._apply(MetadataOp(op="set", key=key, value=_json.dump_python(value, mode="json")))

    def delete(self, key: str) -> None:
        self._apply(MetadataOp(op="delete", key=key))

    def append(self, key: str, value: Any) -> None:
        self._apply(MetadataOp(op="append", key=key, value=_json.dump_python(value, mode="json")))

    def increment(self, key: str, amount: float = 1) -> None:
        self._apply(MetadataOp(op="increment", key=key, value=amount))

    def decrement(self, key: str, amount: float = 1) -> None:
        self.increment(key, -amount)

    def get(self, key: str, default: Any = None) -> Any:
        return self._run().metadata.get(key, default)

    def current(self) -> dict[str, Any]:
        return dict(self._run().metadata)


def apply_metadata_op(metadata: dict[str, Any], op: MetadataOp) -> None:
    """Apply one operation in place; the runtime and the task process share this rule."""
    if op.op == "set":
        metadata[op.key] = op.value
    elif op.op == "delete":
        metadata.pop(op.key, None)
    elif op.op == "append":
        current = metadata.get(op.key)
        if current is None:
            metadata[op.key] = [op.value]
        elif isinstance(current, list):
            current.append(op.value)
        else:
            metadata[op.key] = [current, op.value]
    elif op.op == "increment":
        current = metadata.get(op.key, 0)
        if not isinstance(current, (int, float)) or isinstance(current, bool):
            raise OutlastError(f"metadata key {op.key!r} holds {type(current).__name__}, not a number")
        metadata[op.key] = current + op.value


logger = TaskLogger()
metadata = RunMetadata()
