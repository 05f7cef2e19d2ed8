"""outlast: background tasks for Python web apps that never hit a timeout.

Declare tasks with `@task`, trigger them from any process with `my_task.trigger(payload)` or
`tasks.trigger("task-id", payload)`, and follow them with `runs`.
"""

from . import _runs as runs
from . import _tasks_api as tasks
from ._client import AsyncClient, Client, trigger_options
from ._context import logger, metadata
from ._errors import (
    AbortTaskRunError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    OutlastError,
    PayloadTooLargeError,
    RunFailedError,
    RuntimeUnavailableError,
)
from ._tasks import Task, queue, schema_task, task
from .wire import BatchHandle, RetryPolicy, Run, RunContext, RunEvent, RunHandle, RunStatus, TriggerOptions

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AbortTaskRunError",
    "AsyncClient",
    "AuthenticationError",
    "BatchHandle",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "InvalidRequestError",
    "NotFoundError",
    "OutlastError",
    "PayloadTooLargeError",
    "RetryPolicy",
    "Run",
    "RunContext",
    "RunEvent",
    "RunFailedError",
    "RunHandle",
    "RunStatus",
    "RuntimeUnavailableError",
    "Task",
    "TriggerOptions",
    "logger",
    "metadata",
    "queue",
    "runs",
    "schema_task",
    "task",
    "tasks",
    "trigger_options",
]
