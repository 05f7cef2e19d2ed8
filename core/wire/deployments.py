"""Deployments: versions, promotion, environment variables, and what a deployment worker serves."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from .values import StrictModel

COMMIT_HEADER = "x-outlast-commit"  # the git commit of the triggering code: runs use the version built from it


class DeploymentStatus(enum.StrEnum):
    BUILDING = "BUILDING"  # stored; environment and import step running
    READY = "READY"  # built and imported; current or not
    FAILED = "FAILED"  # build or import failed; never current


class DeployedTask(BaseModel):
    id: str
    queue: str | None = None


class Deployment(BaseModel):
    version: str = Field(description="YYYYMMDD.N, immutable")
    env: str
    status: DeploymentStatus
    current: bool = False
    git_commit: str | None = None
    git_branch: str | None = None
    requirements_hash: str | None = None
    bundle_sha256: str
    bundle_bytes: int
    files: int
    tasks: list[DeployedTask] = Field(default_factory=list)
    step: str = Field("", description="what the build is doing now, or did last")
    error: str | None = Field(None, description="why the build failed (an import error's traceback)")
    on_disk: bool = Field(True, description="False once garbage-collected (its bundle stays in the store)")
    created_at: datetime
    built_at: datetime | None = None
    promoted_at: datetime | None = None


class PromoteRequest(StrictModel):
    version: str | None = Field(None, description="promote this version")
    commit: str | None = Field(None, min_length=4, max_length=64,
                               description="or the newest ready version built from this git commit")


class EnvVar(BaseModel):
    name: str
    hint: str = Field(description="the value is never shown in full: its last characters only")
    created_at: datetime
    updated_at: datetime


class EnvVarSet(StrictModel):
    value: str = Field(max_length=65536)


class WorkerDeployments(BaseModel):
    """What a remote deployment worker serves for its environment (`GET /worker/deployments`)."""

    versions: list[str] = Field(description="READY versions on disk or with unfinished runs")
    task_ids: list[str]
    current: list[str] = Field(description="current versions: kept warm")
    configs: dict[str, dict[str, Any]] = Field(description="each version's modules, env and requirements")
