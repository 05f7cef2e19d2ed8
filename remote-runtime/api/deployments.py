"""Deployment and environment-variable endpoints (`/api/v1/deployments`, `/api/v1/env-vars`).

A deploy uploads the bundle as the raw request body (`application/gzip`) and gets 202 with the
BUILDING deployment; `GET /deployments/{version}` shows its build step until it is READY or FAILED.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse

from outlast.wire import API_PREFIX, Deployment, EnvVar, EnvVarSet, PromoteRequest, WorkerDeployments

from ..deploy.bundles import MAX_BUNDLE_BYTES, BundleError, UnsafeBundle
from ..errors import EngineError
from .checked_input import CheckedRoute
from .deps import Env, PayloadTooLarge, State

router = APIRouter(prefix=API_PREFIX, route_class=CheckedRoute)


class InvalidBundle(EngineError):
    status_code = 422
    code = "invalid_bundle"


class MissingBundle(EngineError):
    status_code = 404
    code = "bundle_not_found"


def _bundle_limit() -> int:
    return int(os.environ.get("OUTLAST_MAX_BUNDLE_BYTES", str(MAX_BUNDLE_BYTES)))


@router.post("/deployments", status_code=202, response_model=Deployment, tags=["deployments"])
async def deploy(
    request: Request, env: Env, rt: State,
    commit: Annotated[str | None, Query(max_length=64)] = None,
    branch: Annotated[str | None, Query(max_length=256)] = None,
) -> Deployment:
    """Upload a bundle (tar.gz body); it is checked, stored, then built and promoted in the background."""
    limit = _bundle_limit()
    with tempfile.TemporaryDirectory(prefix="outlast-upload-") as scratch:
        path = Path(scratch) / "bundle.tar.gz"
        size = 0
        with path.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"bundle is over the limit of {limit} bytes (OUTLAST_MAX_BUNDLE_BYTES)",
                                          field="bundle")
                out.write(chunk)
        if size == 0:
            raise InvalidBundle("the request body is empty: send the bundle (tar.gz) as the body", field="bundle")
        try:
            deployment = await run_in_threadpool(rt.deployments.create, env, path, commit=commit, branch=branch)
        except UnsafeBundle as exc:
            raise InvalidBundle(f"bundle refused: {exc}", field="bundle") from None
        except BundleError as exc:
            raise InvalidBundle(str(exc), field="bundle") from None
    rt.start_build(deployment.version)
    return deployment


@router.get("/deployments", response_model=list[Deployment], tags=["deployments"])
def list_deployments(env: Env, rt: State, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[Deployment]:
    return rt.deployments.list(env, limit)


@router.get("/deployments/{version}", response_model=Deployment, tags=["deployments"])
def get_deployment(version: str, env: Env, rt: State) -> Deployment:
    return rt.deployments.get(env, version)


@router.post("/deployments/promote", response_model=Deployment, tags=["deployments"])
def promote(body: PromoteRequest, env: Env, rt: State) -> Deployment:
    """Make a version current: by version, or the newest READY one built from a git commit."""
    return rt.deployments.promote(env, body.version, commit=body.commit)


@router.post("/deployments/rollback", response_model=Deployment, tags=["deployments"])
def rollback(env: Env, rt: State) -> Deployment:
    return rt.deployments.rollback(env)


@router.get("/env-vars", response_model=list[EnvVar], tags=["env-vars"])
def list_env_vars(env: Env, rt: State) -> list[EnvVar]:
    return rt.env_vars.list(env)


@router.put("/env-vars/{name}", response_model=EnvVar, tags=["env-vars"])
async def set_env_var(name: str, body: EnvVarSet, env: Env, rt: State) -> EnvVar:
    """Set a variable for the environment's task processes (new processes see it); the value is never returned."""
    variable = await run_in_threadpool(rt.env_vars.set, env, name, body.value)
    await rt.env_vars_changed()
    return variable


@router.delete("/env-vars/{name}", status_code=204, tags=["env-vars"])
async def delete_env_var(name: str, env: Env, rt: State) -> Response:
    await run_in_threadpool(rt.env_vars.delete, env, name)
    await rt.env_vars_changed()
    return Response(status_code=204)


# --- remote deployment workers (`outlast worker --deployments`) ---------------------------------------


@router.get("/worker/deployments", response_model=WorkerDeployments, tags=["worker"])
def worker_deployments(env: Env, rt: State) -> WorkerDeployments:
    served, current, configs = rt.deployments.served_in(env)
    return WorkerDeployments(versions=served.versions, task_ids=served.task_ids, current=current, configs=configs)


@router.get("/worker/deployments/{version}/bundle", tags=["worker"])
def worker_bundle(version: str, env: Env, rt: State) -> FileResponse:
    scratch = tempfile.mkdtemp(prefix="outlast-bundle-")
    path = Path(scratch) / f"{version}.tar.gz"
    try:
        rt.deployments.bundle(env, version, path)
    except BundleError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise MissingBundle(str(exc), field="version") from None
    return FileResponse(path, media_type="application/gzip",
                        background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True))


@router.get("/worker/env-vars", response_model=dict[str, str], tags=["worker"])
def worker_env_vars(env: Env, rt: State) -> dict[str, str]:
    """The decrypted values, for the environment's workers to start task processes with (never for people:
    `GET /env-vars` shows hints only)."""
    return rt.env_vars.values(env)
