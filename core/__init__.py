"""outlast: background tasks for Python web apps that never hit a timeout.

Declare tasks with `@task`, trigger them from any process with `my_task.trigger(payload)` or
`tasks.trigger("task-id", payload)`, and follow them with `runs`.
"""

from . import _runs as runs
from . import _schedules as schedules
from . import _tasks_api as tasks
from . import _wait as wait
from ._bulk import AsyncBulk, Bulk
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
from ._hooks import on_process_start, on_resume
from ._tasks import Task, queue, schema_task, task
from ._wait import BatchRunResult, TaskRunResult, TokenResult, WaitpointTimeoutError
from .wire import (
    BatchHandle,
    BulkAction,
    BulkFilter,
    DebounceOptions,
    RetryPolicy,
    Run,
    RunContext,
    RunEvent,
    RunHandle,
    RunStatus,
    TriggerOptions,
    Waitpoint,
    WaitToken,
)

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AbortTaskRunError",
    "AsyncBulk",
    "AsyncClient",
    "AuthenticationError",
    "BatchHandle",
    "BatchRunResult",
    "Bulk",
    "BulkAction",
    "BulkFilter",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "DebounceOptions",
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
    "TaskRunResult",
    "TokenResult",
    "TriggerOptions",
    "WaitToken",
    "Waitpoint",
    "WaitpointTimeoutError",
    "logger",
    "metadata",
    "on_process_start",
    "on_resume",
    "queue",
    "runs",
    "schedules",
    "schema_task",
    "task",
    "tasks",
    "trigger_options",
    "wait",
]

# Deployments and environment variables through the API (what `outlast deploy|versions|env` use).
from ._deployments import AsyncDeployments, Deployments

__all__ += ["AsyncDeployments", "Deployments"]

# Realtime: run changes (`runs.subscribe`, `runs.subscribe_to_tag`) and a task's named streams.
from . import _streams as streams  # noqa: E402 - grouped with its names
from ._streams import StreamLimitError  # noqa: E402
from .wire import RunChange, StreamChunk  # noqa: E402

__all__ += ["RunChange", "StreamChunk", "StreamLimitError", "streams"]
