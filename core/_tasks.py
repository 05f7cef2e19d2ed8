"""Declaring tasks: `@task`, `@schema_task`, and the registry a task process reads."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import pydantic

from . import _client, _tasks_api, _wait
from ._errors import InvalidRequestError, OutlastError
from ._validation import validate
from .wire import BatchHandle, BatchItem, QueueOptions, RateLimit, RetryPolicy, RunHandle, TaskManifest

R = TypeVar("R")

_registry: dict[str, Task[Any]] = {}


class DuplicateTaskError(OutlastError):
    """Two different functions were declared with the same task id."""


def queue(name: str, *, concurrency_limit: int | None = None,
          rate_limit: str | dict[str, Any] | RateLimit | None = None) -> QueueOptions:
    """A named queue; tasks and triggers that name it share its concurrency limit and its rate limit
    (`"10/m"`, or `{"limit": 10, "period": "1m", "burst": 1}`: runs started per period, per concurrency key).
    Raises InvalidRequestError naming the bad field."""
    return validate(QueueOptions, {"name": name, "concurrency_limit": concurrency_limit, "rate_limit": rate_limit})


class Task(Generic[R]):
    """A declared task: call `.trigger()` from anywhere, or the function itself in a unit test."""

    def __init__(
        self,
        fn: Callable[..., R],
        *,
        id: str,
        queue: str | dict[str, Any] | QueueOptions | None = None,
        retry: dict[str, Any] | RetryPolicy | None = None,
        max_duration: float | None = None,
        machine: str | None = None,
        payload_model: type[pydantic.BaseModel] | None = None,
        checkpoint_after: float | None = None,
        network: bool = True,
    ) -> None:
        self.fn = fn
        self.id = id
        self.payload_model = payload_model
        self._takes_ctx = len(inspect.signature(fn).parameters) >= 2
        # validate(): a bad option is an InvalidRequestError naming it, at declaration.
        self.manifest = validate(TaskManifest, dict(
            id=id,
            export=fn.__qualname__,
            module=fn.__module__,
            queue=QueueOptions(name=queue) if isinstance(queue, str) else queue,
            retry=retry or RetryPolicy(),
            max_duration=max_duration,
            machine=machine,
            payload_schema=payload_model.model_json_schema() if payload_model else None,
            checkpoint_after=checkpoint_after,
            network=network,
        ))
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", id)

    def __repr__(self) -> str:
        return f"<Task {self.id!r}>"

    def __call__(self, payload: Any, ctx: Any = None) -> R:
        return self.fn(payload, ctx) if self._takes_ctx else self.fn(payload)

    # --- inside a task process -----------------------------------------------------------

    def prepare_payload(self, payload: Any) -> Any:
        return self.payload_model.model_validate(payload) if self.payload_model else payload

    # --- triggering ----------------------------------------------------------------------

    def check_payload(self, payload: Any) -> Any:
        """Validate against the schema before anything is sent; a bad payload never makes a run."""
        if self.payload_model is None:
            return jsonable(payload)
        if isinstance(payload, self.payload_model):
            return payload.model_dump(mode="json")
        try:
            return self.payload_model.model_validate(payload).model_dump(mode="json")
        except pydantic.ValidationError as exc:
            raise _payload_error(self.id, exc) from None

    def trigger(self, payload: Any = None, *, client: _client.Client | None = None, **options: Any) -> RunHandle:
        body = self.check_payload(payload)
        return _client.or_default(client).trigger(self.id, body, _client.trigger_options(**options))

    async def atrigger(
        self, payload: Any = None, *, client: _client.AsyncClient | None = None, **options: Any
    ) -> RunHandle:
        body = self.check_payload(payload)
        client = _client.or_default_async(client)
        return await client.trigger(self.id, body, _client.trigger_options(**options))

    def batch_items(self, items: Sequence[Any]) -> list[BatchItem]:
        """Batch items for this task, each payload checked (items as for `batch_trigger`)."""
        checked = [{**item, "payload": self.check_payload(item["payload"])} if _tasks_api.is_item(item)
                   else self.check_payload(item) for item in items]
        return _tasks_api.items_for(self.id, checked)

    def batch_trigger(self, items: Sequence[Any], *, client: _client.Client | None = None) -> BatchHandle:
        """Trigger one run per item (a payload, or `{"payload": ..., "options": {...}}`), in one request."""
        return _client.or_default(client).batch_trigger(self.batch_items(items))

    async def abatch_trigger(
        self, items: Sequence[Any], *, client: _client.AsyncClient | None = None
    ) -> BatchHandle:
        return await _client.or_default_async(client).batch_trigger(self.batch_items(items))

    # --- inside a task: trigger children and wait for them ------------------------------

    def trigger_and_wait(self, payload: Any = None, **options: Any) -> Any:
        """Run this task as a child of the current run and wait for its result (a `TaskRunResult`).

        Awaitable in async code, blocking in sync code. The child runs the parent's version.
        """
        item = BatchItem(task=self.id, payload=self.check_payload(payload), options=_client.trigger_options(**options))
        return _wait.wait_for_runs([item], single=True)

    def batch_trigger_and_wait(self, items: Sequence[Any]) -> Any:
        """Run one child per item and wait for all of them (a `BatchRunResult`, in item order)."""
        return _wait.wait_for_runs(self.batch_items(items), single=False)


def jsonable(payload: Any) -> Any:
    """`payload` as JSON-ready data; `InvalidRequestError` when it cannot be sent as JSON."""
    try:
        return pydantic.TypeAdapter(Any).dump_python(payload, mode="json")
    except pydantic.PydanticSerializationError as exc:
        raise InvalidRequestError(f"payload is not JSON serializable: {exc}", field="payload") from None


def _payload_error(task_id: str, exc: pydantic.ValidationError) -> InvalidRequestError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in ("payload", *first["loc"]))
    return InvalidRequestError(
        f"payload for task {task_id!r} is invalid: {field}: {first['msg']}",
        field=field,
        body={"details": exc.errors(include_url=False, include_context=False)},
    )


def register(new: Task[Any]) -> None:
    """Add a declared task to the registry a task process reads; the same id twice is an error."""
    existing = _registry.get(new.id)
    if existing is not None and (existing.manifest.module, existing.manifest.export) != (
        new.manifest.module, new.manifest.export,
    ):
        raise DuplicateTaskError(
            f"task id {new.id!r} is declared twice: {existing.manifest.module}.{existing.manifest.export} "
            f"and {new.manifest.module}.{new.manifest.export}"
        )
    _registry[new.id] = new


def task(
    *,
    id: str,
    queue: str | dict[str, Any] | QueueOptions | None = None,
    retry: dict[str, Any] | RetryPolicy | None = None,
    max_duration: float | None = None,
    machine: str | None = None,
    checkpoint_after: float | None = None,
    network: bool = True,
) -> Callable[[Callable[..., R]], Task[R]]:
    """Declare a task. The function takes `(payload)` or `(payload, ctx)`, sync or async.

    `checkpoint_after`: seconds a wait stays in memory before the process is checkpointed
    (default: the runtime's OUTLAST_CHECKPOINT_AFTER, 5 s).
    `network=False`: its runs get task processes with only a loopback interface of their own (no
    outbound network, nothing on the host's); see docs/isolation.md. True or False only.
    """
    return _declare(id=id, queue=queue, retry=retry, max_duration=max_duration, machine=machine,
                    checkpoint_after=checkpoint_after, network=network)


def schema_task(
    *,
    id: str,
    schema: type[pydantic.BaseModel],
    queue: str | dict[str, Any] | QueueOptions | None = None,
    retry: dict[str, Any] | RetryPolicy | None = None,
    max_duration: float | None = None,
    machine: str | None = None,
    checkpoint_after: float | None = None,
    network: bool = True,
) -> Callable[[Callable[..., R]], Task[R]]:
    """Like `task`, with the payload validated by a pydantic model before the run is created."""
    return _declare(id=id, queue=queue, retry=retry, max_duration=max_duration, machine=machine,
                    payload_model=schema, checkpoint_after=checkpoint_after, network=network)


def _declare(**config: Any) -> Callable[[Callable[..., R]], Task[R]]:
    def decorate(fn: Callable[..., R]) -> Task[R]:
        declared = Task(fn, **config)
        register(declared)
        return declared

    return decorate


def task_id_of(task: Task[Any] | str) -> str:
    """The id of a task given as a `Task` or as its id (what adapters accept); `TypeError` otherwise."""
    if isinstance(task, Task):
        return task.id
    if isinstance(task, str) and task:
        return task
    raise TypeError(f"task must be a Task or a task id, got {task!r}")


def registered_tasks() -> dict[str, Task[Any]]:
    return dict(_registry)
