"""Deployments and environment variables through the runtime's API (used by the CLI and the Vercel adapter).

Requests are built once here and sent by either twin, like `_schedules`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from ._client import AsyncClient, Client, _parse
from .wire import API_PREFIX, Deployment, EnvVar, EnvVarSet, PromoteRequest

__all__ = ["AsyncDeployments", "Deployments"]

_DEPLOYMENT = TypeAdapter(Deployment)
_DEPLOYMENTS = TypeAdapter(list[Deployment])
_ENV_VAR = TypeAdapter(EnvVar)
_ENV_VARS = TypeAdapter(list[EnvVar])
_NOTHING = TypeAdapter(Any)


def _upload(client: Client | AsyncClient, bundle: bytes, commit: str | None, branch: str | None) -> httpx.Request:
    params = [(k, v) for k, v in (("commit", commit), ("branch", branch)) if v]
    requests = client._requests
    headers = {**requests.headers, "Content-Type": "application/gzip"}
    # A large bundle may take a while to arrive and be checked: a longer write/read budget than API calls.
    timeout = httpx.Timeout(max(requests.timeout.read or 10, 120), connect=requests.timeout.connect)
    return httpx.Request("POST", f"{requests.api_url}{API_PREFIX}/deployments", params=params, content=bundle,
                         headers=headers, extensions={"timeout": timeout.as_dict()})


def _requests(client: Client | AsyncClient) -> Any:
    return client._requests


class _Builder:
    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client

    def deploy(self, bundle: bytes, commit: str | None, branch: str | None) -> httpx.Request:
        return _upload(self.client, bundle, commit, branch)

    def get(self, version: str) -> httpx.Request:
        return _requests(self.client).build("GET", f"/deployments/{quote(version, safe='')}")

    def list(self) -> httpx.Request:
        return _requests(self.client).build("GET", "/deployments")

    def promote(self, version: str | None, commit: str | None) -> httpx.Request:
        return _requests(self.client).build("POST", "/deployments/promote",
                                            body=PromoteRequest(version=version, commit=commit))

    def rollback(self) -> httpx.Request:
        return _requests(self.client).build("POST", "/deployments/rollback")

    def env_list(self) -> httpx.Request:
        return _requests(self.client).build("GET", "/env-vars")

    def env_set(self, name: str, value: str) -> httpx.Request:
        return _requests(self.client).build("PUT", f"/env-vars/{quote(name, safe='')}", body=EnvVarSet(value=value))

    def env_delete(self, name: str) -> httpx.Request:
        return _requests(self.client).build("DELETE", f"/env-vars/{quote(name, safe='')}")


def _no_content(response: httpx.Response) -> None:
    if response.status_code != 204:
        _parse(response, _NOTHING)


class Deployments:
    """`Deployments(client).promote(commit=...)`, `.list()`, `.env_set(...)`, ..."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._build = _Builder(client)

    def deploy(self, bundle: bytes, *, commit: str | None = None, branch: str | None = None) -> Deployment:
        return _parse(self._client._send(self._build.deploy(bundle, commit, branch)), _DEPLOYMENT)

    def get(self, version: str) -> Deployment:
        return _parse(self._client._send(self._build.get(version)), _DEPLOYMENT)

    def list(self) -> list[Deployment]:
        return _parse(self._client._send(self._build.list()), _DEPLOYMENTS)

    def promote(self, version: str | None = None, *, commit: str | None = None) -> Deployment:
        return _parse(self._client._send(self._build.promote(version, commit)), _DEPLOYMENT)

    def rollback(self) -> Deployment:
        return _parse(self._client._send(self._build.rollback()), _DEPLOYMENT)

    def env_list(self) -> list[EnvVar]:
        return _parse(self._client._send(self._build.env_list()), _ENV_VARS)

    def env_set(self, name: str, value: str) -> EnvVar:
        return _parse(self._client._send(self._build.env_set(name, value)), _ENV_VAR)

    def env_delete(self, name: str) -> None:
        _no_content(self._client._send(self._build.env_delete(name)))


class AsyncDeployments:
    """The async twin (what a web app's webhook receiver uses)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._build = _Builder(client)

    async def get(self, version: str) -> Deployment:
        return _parse(await self._client._send(self._build.get(version)), _DEPLOYMENT)

    async def list(self) -> list[Deployment]:
        return _parse(await self._client._send(self._build.list()), _DEPLOYMENTS)

    async def promote(self, version: str | None = None, *, commit: str | None = None) -> Deployment:
        return _parse(await self._client._send(self._build.promote(version, commit)), _DEPLOYMENT)

    async def env_list(self) -> list[EnvVar]:
        return _parse(await self._client._send(self._build.env_list()), _ENV_VARS)

    async def env_set(self, name: str, value: str) -> EnvVar:
        return _parse(await self._client._send(self._build.env_set(name, value)), _ENV_VAR)

    async def env_delete(self, name: str) -> None:
        _no_content(await self._client._send(self._build.env_delete(name)))
