"""`GET {prefix}/health`: the runtime answers, the app's key is valid, and the app's tasks are deployed."""

from __future__ import annotations

from typing import Any

from outlast._errors import AuthenticationError, ConfigurationError, RuntimeUnavailableError

from ._http import AdapterRequest, AdapterResponse, json_response


async def health(request: AdapterRequest) -> AdapterResponse:
    """200 when all is well; 503 with `problems` (one sentence each) when anything is not."""
    endpoints = request.endpoints
    assert endpoints is not None
    body: dict[str, Any] = {"status": "ok", "runtime": endpoints.settings.client.api_url,
                            "runtime_reachable": False, "key_valid": False}
    declared = endpoints.declared_tasks()
    problems: list[str] = []
    try:
        client = endpoints.async_client()
        deployed = await client.execute(client.requests.list_tasks())
        body["runtime_reachable"] = body["key_valid"] = True
        versions = {task.id: task.version for task in deployed}
        missing = [task for task in declared if task not in versions]
        body["tasks"] = {task: {"deployed": task in versions, "version": versions.get(task)} for task in declared}
        if missing:
            problems.append(f"tasks not in the runtime's current version: {', '.join(missing)}")
    except RuntimeUnavailableError as exc:
        problems.append(str(exc))
    except AuthenticationError as exc:
        body["runtime_reachable"] = True
        problems.append(f"the runtime refused the secret key: {exc}")
    except ConfigurationError as exc:
        problems.append(str(exc))
    if problems:
        body["status"] = "error"
        body["problems"] = problems
    return json_response(body, status=503 if problems else 200, headers={"cache-control": "no-store"})
