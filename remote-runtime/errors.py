"""Errors the engine raises; the API turns each into an HTTP status with `wire.ErrorBody`."""

from __future__ import annotations


class EngineError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownTask(EngineError):
    status_code = 404
    code = "task_not_found"


class RunNotFound(EngineError):
    status_code = 404
    code = "run_not_found"


class InvalidPayload(EngineError):
    status_code = 422
    code = "invalid_payload"


class Conflict(EngineError):
    status_code = 409
    code = "conflict"


class TasksDoNotImport(Conflict):
    """`outlast dev` after a broken save: the node cannot run the task until the file is fixed."""

    code = "tasks_do_not_import"
