"""Pull a Vercel project's environment variables into an outlast environment, with a dry-run diff.

Reads them through Vercel's REST API (`GET /v10/projects/{project}/env?decrypt=true`, following
`pagination.next`) with a token from VERCEL_TOKEN, keeps those of one Vercel environment
(production, preview, development), and sets them through the runtime's env-vars API. outlast never
shows a stored value again, so the diff compares names and the hints (last characters) it keeps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx

from outlast._deployments import Deployments
from outlast._errors import ConfigurationError, OutlastError

__all__ = ["DEFAULT_API", "EnvDiff", "VercelAPIError", "VercelEnvSync"]

DEFAULT_API = "https://api.vercel.com"
TOKEN_ENV = "VERCEL_TOKEN"
TARGETS = ("production", "preview", "development")
_MAX_PAGES = 1000


class VercelAPIError(OutlastError):
    """Vercel's API answered with an error (bad token, unknown project, rate limit, outage)."""

    def __init__(self, message: str, *, status_code: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


@dataclass
class EnvDiff:
    """What a sync would do. Values are kept for `apply` but never printed."""

    target: str
    added: list[str] = field(default_factory=list)  # in Vercel only: created
    updated: list[str] = field(default_factory=list)  # in both, hint differs (or too short to tell): overwritten
    same: list[str] = field(default_factory=list)  # in both, same hint: written again all the same
    removed: list[str] = field(default_factory=list)  # in outlast only: deleted when pruning
    unreadable: list[str] = field(default_factory=list)  # sensitive in Vercel: its API never returns the value
    values: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def changes(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def lines(self) -> list[str]:
        marks = (("+", self.added, "new"), ("~", self.updated, "differs"), ("=", self.same, "same hint"),
                 ("-", self.removed, "only in outlast"), ("!", self.unreadable, "sensitive: not readable"))
        return [f"{mark} {name} ({why})" for mark, names, why in marks for name in names]


def _hint(value: str) -> str:
    return "****" + value[-4:] if len(value) >= 12 else "****"  # as the runtime computes it


class VercelEnvSync:
    def __init__(self, project: str, *, token: str | None = None, team_id: str | None = None,
                 api_url: str = DEFAULT_API, transport: httpx.BaseTransport | None = None,
                 timeout: float = 10.0) -> None:
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            raise ConfigurationError(f"no Vercel token: set {TOKEN_ENV} (create one under Vercel > Account > Tokens)")
        self.project = project
        self.team_id = team_id or os.environ.get("VERCEL_TEAM_ID") or None
        self._http = httpx.Client(base_url=api_url, transport=transport, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})

    def close(self) -> None:
        self._http.close()

    def fetch(self, target: str, *, branch: str | None = None) -> tuple[dict[str, str], list[str]]:
        """The variables of one Vercel environment: ({name: value}, [names whose value Vercel hides])."""
        if target not in TARGETS:
            raise ConfigurationError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        values: dict[str, str] = {}
        hidden: list[str] = []
        params: dict[str, Any] = {"decrypt": "true"}
        if self.team_id:
            params["teamId"] = self.team_id
        if branch:
            params["gitBranch"] = branch
        seen: set[Any] = set()
        for _ in range(_MAX_PAGES):
            body = self._get(f"/v10/projects/{self.project}/env", params)
            for entry in body.get("envs", []):
                targets = entry.get("target") or []
                targets = [targets] if isinstance(targets, str) else targets
                if target not in targets or (entry.get("gitBranch") and entry.get("gitBranch") != branch):
                    continue
                if entry.get("type") == "sensitive" or entry.get("value") is None:
                    hidden.append(entry["key"])
                else:
                    values[entry["key"]] = str(entry["value"])
            following = (body.get("pagination") or {}).get("next")
            if following is None or following in seen:
                break
            seen.add(following)
            params["until"] = following
        return values, sorted(set(hidden) - set(values))

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise VercelAPIError(f"cannot reach Vercel's API at {self._http.base_url}: {exc}", status_code=0) from exc
        if response.is_success:
            return response.json()
        try:
            error = response.json().get("error") or {}
        except ValueError:
            error = {}
        message = error.get("message") or response.text[:200] or response.reason_phrase
        hint = {401: f" (check {TOKEN_ENV})", 403: " (the token has no access to this project or team)",
                404: f" (no project {self.project!r}" + (f" in team {self.team_id}" if self.team_id else "") + ")",
                429: f" (rate limited; retry after {response.headers.get('retry-after', '?')}s)"}
        raise VercelAPIError(f"Vercel API {response.status_code}: {message}{hint.get(response.status_code, '')}",
                             status_code=response.status_code, code=error.get("code"))

    def diff(self, target: str, deployments: Deployments, *, branch: str | None = None,
             prune: bool = False) -> EnvDiff:
        values, hidden = self.fetch(target, branch=branch)
        current = {v.name: v.hint for v in deployments.env_list()}
        diff = EnvDiff(target=target, values=values, unreadable=hidden)
        for name in sorted(values):
            if name not in current:
                diff.added.append(name)
            elif len(values[name]) >= 12 and current[name] == _hint(values[name]):
                diff.same.append(name)
            else:
                diff.updated.append(name)
        if prune:
            diff.removed = sorted(set(current) - set(values) - set(hidden))
        return diff

    @staticmethod
    def apply(diff: EnvDiff, deployments: Deployments) -> None:
        for name in (*diff.added, *diff.updated, *diff.same):
            deployments.env_set(name, diff.values[name])
        for name in diff.removed:
            deployments.env_delete(name)

    def sync(self, target: str, deployments: Deployments, *, branch: str | None = None, prune: bool = False,
             dry_run: bool = False) -> EnvDiff:
        diff = self.diff(target, deployments, branch=branch, prune=prune)
        if not dry_run:
            self.apply(diff, deployments)
        return diff
