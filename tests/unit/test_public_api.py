"""The public surface of `outlast` and `outlast.wire`: a name added or dropped is a deliberate change here."""

from __future__ import annotations

import importlib

import pytest

import outlast
import outlast.wire

OUTLAST = {
    "APIError", "AbortTaskRunError", "AsyncClient", "AsyncDeployments", "AuthenticationError", "BatchHandle",
    "BatchRunResult", "Client", "ConfigurationError", "ConflictError", "Deployments", "InvalidRequestError",
    "NotFoundError", "OutlastError", "PayloadTooLargeError", "RetryPolicy", "Run", "RunContext", "RunEvent",
    "RunFailedError", "RunHandle", "RunStatus", "RuntimeUnavailableError", "Task", "TaskRunResult", "TokenResult",
    "TriggerOptions", "WaitToken", "Waitpoint", "WaitpointTimeoutError", "logger", "metadata", "on_process_start",
    "on_resume", "queue", "runs", "schedules", "schema_task", "task", "tasks", "trigger_options", "wait",
}
OUTLAST |= {"AsyncBulk", "Bulk", "BulkAction", "BulkFilter", "DebounceOptions"}  # flow control

# What the runtime and the adapters import from `outlast.wire` (it was one module before it became a package).
WIRE = {
    "API_PREFIX", "Assignment", "AttemptCompletion", "AttemptOutcome", "BatchHandle", "BatchItem",
    "BatchTriggerRequest", "COMMIT_HEADER", "Call", "CatchUp", "CheckpointMode", "ClaimRequest", "ClaimResponse",
    "CompleteTokenRequest", "CreateTokenRequest", "DeployedTask", "Deployment", "DeploymentStatus", "Duration",
    "EnvVar", "EnvVarSet", "ErrorBody", "FINAL_STATUSES", "FRAME_HEADER_BYTES", "Heartbeat", "HeartbeatRequest",
    "HeartbeatResponse", "Hello", "LeasedAttempt", "Log", "LogRecord", "MACHINE_PRESETS", "MAX_BATCH_ITEMS",
    "MAX_DELAY", "MAX_DURATION", "MAX_PUBLIC_TOKEN_TTL", "MAX_TAGS", "Metadata", "MetadataOp", "MetadataUpdate",
    "Moment", "PUBLIC_TOKEN_PREFIX",
    "PromoteRequest", "PublicToken", "PublicTokenRequest", "Queue", "QueueOptions", "RateLimit", "Reply",
    "RescheduleRequest", "Resolved",
    "Result", "ResumeInfo", "ResumeRequest", "Resumed", "RetryPolicy", "Run", "RunContext", "RunEvent", "RunHandle",
    "RunList", "RunStatus", "Schedule", "ScheduleCreate", "ScheduleList", "ScheduleSpec", "ScheduleType",
    "ScheduleUpdate", "ScheduledPayload", "Shutdown", "StartAttempt", "Suspend", "SuspendRequest", "Suspended",
    "TaskInfo", "TaskManifest", "TaskRunError", "ToSupervisor", "ToTaskProcess", "TokenCall", "TriggerOptions",
    "TriggerRequest", "WaitRequest", "WaitSpec", "WaitToken", "Waitpoint", "WaitpointKind", "WaitpointResult",
    "WaitpointState", "WorkerDeployments", "WorkerNode", "WorkerRegistration", "WorkerReport", "parse_duration",
    "to_supervisor", "to_task_process",
}
WIRE |= {"BulkAction", "BulkActionCreate", "BulkActionKind", "BulkActionState", "BulkFilter", "DebounceMode",
         "DebounceOptions"}  # flow control (wire/flow.py)
OUTLAST |= {"RunChange", "StreamChunk", "StreamLimitError", "streams"}  # realtime (_realtime.py, _streams.py)
WIRE |= {"CHUNK_EVENT", "END_EVENT", "LOG_EVENT", "MAX_BATCH_SUBSCRIPTION", "RUN_EVENT", "STREAM_NAME_PATTERN",
         "RunChange", "StreamAppend", "StreamChunk", "StreamEnd", "StreamWrite", "StreamWritten"}  # wire/realtime.py


def test_outlast_exports_exactly_its_public_names() -> None:
    assert set(outlast.__all__) == OUTLAST
    assert len(outlast.__all__) == len(OUTLAST), "a name is listed twice in outlast.__all__"


@pytest.mark.parametrize("name", sorted(OUTLAST))
def test_each_public_name_is_importable(name: str) -> None:
    assert getattr(importlib.import_module("outlast"), name) is not None


def test_wire_exports_exactly_the_protocol_names() -> None:
    assert set(outlast.wire.__all__) == WIRE
    for name in WIRE:
        assert getattr(outlast.wire, name) is not None, name


def test_wire_names_live_in_their_protocol_module() -> None:
    # The package only re-exports: each model is defined in one of its modules, never in __init__.
    for name in WIRE:
        module = getattr(getattr(outlast.wire, name), "__module__", "outlast.wire.values")
        assert module.startswith("outlast.wire.") or not module.startswith("outlast"), (name, module)


def test_clients_have_their_namespaces() -> None:
    client = outlast.Client("http://127.0.0.1:1", "sk_test")
    assert isinstance(client.deployments, outlast.Deployments)
    assert callable(client.schedules.create)
    client.close()
