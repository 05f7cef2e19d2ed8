"""`client.deployments`: deployments and environment variables (used by the CLI and the Vercel adapter).

`Deployments(client)` and `AsyncDeployments(client)` are the twins; `_DeploymentCalls` builds their
requests once, on the client's `RequestBuilder`, like the schedules namespace.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from ._requests import ApiCall, AsyncSender, RequestBuilder, Sender
from .wire import Deployment, EnvVar, EnvVarSet, PromoteRequest

__all__ = ["AsyncDeployments", "Deployments"]

_DEPLOYMENT = TypeAdapter(Deployment)
_DEPLOYMENTS = TypeAdapter(list[Deployment])
_ENV_VAR = TypeAdapter(EnvVar)
_ENV_VARS = TypeAdapter(list[EnvVar])


class _DeploymentCalls:
    """Every deployments and env-vars request, whichever twin sends it."""

    def __init__(self, requests: RequestBuilder) -> None:
        self.requests = requests

    def deploy(self, bundle: bytes, commit: str | None, branch: str | None) -> ApiCall[Deployment]:
        params = [(k, v) for k, v in (("commit", commit), ("branch", branch)) if v]
        # A large bundle may take a while to arrive and be checked: a longer write/read budget than API calls.
        budget = self.requests.timeout
        timeout = httpx.Timeout(max(budget.read or 10, 120), connect=budget.connect)
        return self.requests.call("POST", "/deployments", _DEPLOYMENT, params=params, content=bundle,
                                  content_type="application/gzip", timeout=timeout)

    def get(self, version: str) -> ApiCall[Deployment]:
        return self.requests.call("GET", f"/deployments/{quote(version, safe='')}", _DEPLOYMENT)

    def list(self) -> ApiCall[list[Deployment]]:
        return self.requests.call("GET", "/deployments", _DEPLOYMENTS)

    def promote(self, version: str | None, commit: str | None) -> ApiCall[Deployment]:
        body = PromoteRequest(version=version, commit=commit)
        return self.requests.call("POST", "/deployments/promote", _DEPLOYMENT, body=body)

    def rollback(self) -> ApiCall[Deployment]:
        return self.requests.call("POST", "/deployments/rollback", _DEPLOYMENT)

    def env_list(self) -> ApiCall[list[EnvVar]]:
        return self.requests.call("GET", "/env-vars", _ENV_VARS)

    def env_set(self, name: str, value: str) -> ApiCall[EnvVar]:
        return self.requests.call("PUT", f"/env-vars/{quote(name, safe='')}", _ENV_VAR, body=EnvVarSet(value=value))

    def env_delete(self, name: str) -> ApiCall[None]:
        return self.requests.call("DELETE", f"/env-vars/{quote(name, safe='')}", None)


class Deployments:
    """`Deployments(client)` or `client.deployments`: `.promote(commit=...)`, `.list()`, `.env_set(...)`, ..."""

    def __init__(self, client: Sender) -> None:
        self._client = client
        self._calls = _DeploymentCalls(client.requests)

    def deploy(self, bundle: bytes, *, commit: str | None = None, branch: str | None = None) -> Deployment:
        return self._client.execute(self._calls.deploy(bundle, commit, branch))

    def get(self, version: str) -> Deployment:
        return self._client.execute(self._calls.get(version))

    def list(self) -> list[Deployment]:
        return self._client.execute(self._calls.list())

    def promote(self, version: str | None = None, *, commit: str | None = None) -> Deployment:
        return self._client.execute(self._calls.promote(version, commit))

    def rollback(self) -> Deployment:
        return self._client.execute(self._calls.rollback())

    def env_list(self) -> list[EnvVar]:
        return self._client.execute(self._calls.env_list())

    def env_set(self, name: str, value: str) -> EnvVar:
        return self._client.execute(self._calls.env_set(name, value))

    def env_delete(self, name: str) -> None:
        self._client.execute(self._calls.env_delete(name))


class AsyncDeployments:
    """The async twin (what a web app's webhook receiver uses)."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client
        self._calls = _DeploymentCalls(client.requests)

    async def get(self, version: str) -> Deployment:
        return await self._client.execute(self._calls.get(version))

    async def list(self) -> list[Deployment]:
        return await self._client.execute(self._calls.list())

    async def promote(self, version: str | None = None, *, commit: str | None = None) -> Deployment:
        return await self._client.execute(self._calls.promote(version, commit))

    async def env_list(self) -> list[EnvVar]:
        return await self._client.execute(self._calls.env_list())

    async def env_set(self, name: str, value: str) -> EnvVar:
        return await self._client.execute(self._calls.env_set(name, value))

    async def env_delete(self, name: str) -> None:
        await self._client.execute(self._calls.env_delete(name))
