"""The Vercel deployment webhook: a verified `deployment.succeeded`/`deployment.promoted` makes the task
version built from the same git commit current for that Vercel environment.

It is an adapter-core handler: `mount(outlast)` serves it under an app's outlast prefix (FastAPI,
Flask, Django, `AdapterEndpoints`); `asgi_app()` serves it alone.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from outlast._adapter import AdapterRequest, AdapterResponse, Handler, error_response, json_response
from outlast._client import AsyncClient
from outlast._deployments import AsyncDeployments
from outlast._errors import ConfigurationError, NotFoundError

__all__ = ["DEFAULT_PATH", "PROMOTING_EVENTS", "SECRET_ENV", "SIGNATURE_HEADER", "VercelWebhook", "deployment_commit",
           "deployment_project", "mount", "sign", "verify_signature"]

log = logging.getLogger("outlast.adapters.vercel")

SECRET_ENV = "OUTLAST_VERCEL_WEBHOOK_SECRET"
SIGNATURE_HEADER = "x-vercel-signature"
DEFAULT_PATH = "/vercel"
PROMOTING_EVENTS = ("deployment.succeeded", "deployment.promoted")
_COMMIT_KEYS = ("githubCommitSha", "gitlabCommitSha", "bitbucketCommitSha")


def sign(body: bytes, secret: str) -> str:
    """What Vercel sends in `x-vercel-signature`: the hex HMAC-SHA1 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def verify_signature(body: bytes, signature: str | None, secret: str) -> bool:
    """Constant-time check of a delivery's signature against the raw body."""
    if not signature:
        return False
    return hmac.compare_digest(sign(body, secret).encode(), signature.strip().lower().encode())


def deployment_commit(event: Mapping[str, Any]) -> tuple[str | None, str]:
    """(git commit, Vercel environment) of a deployment event.

    The environment is `payload.target`: `production`, `staging` (a custom environment), or null
    for a preview deployment, which is returned as `preview`.
    """
    payload = event.get("payload") or {}
    deployment = payload.get("deployment") or {}
    meta = deployment.get("meta") or {}
    commit = next((str(meta[k]) for k in _COMMIT_KEYS if meta.get(k)), None)
    target = payload.get("target") or deployment.get("target") or "preview"
    return commit, str(target)


def deployment_project(event: Mapping[str, Any]) -> str | None:
    """The Vercel project id of a deployment event (`payload.project.id`)."""
    payload = event.get("payload") or {}
    project = payload.get("project") or {}
    found = project.get("id") if isinstance(project, Mapping) else None
    return str(found or payload.get("projectId") or "") or None


def _ignored(code: str, reason: str, *, warn: bool = False, **context: Any) -> AdapterResponse:
    """A delivery the webhook deliberately does nothing for: 200, so Vercel does not redeliver it."""
    log.log(logging.WARNING if warn else logging.INFO, "vercel webhook ignored (%s): %s", code, reason)
    return json_response({"promoted": False, "ignored": True, "code": code, "reason": reason, **context})


class VercelWebhook:
    """`async (AdapterRequest) -> AdapterResponse` for Vercel's deployment webhooks.

    `keys` maps a Vercel environment (`production`, `preview`, or a custom one such as `staging`)
    to the secret key of the outlast environment its deploys go to; without it, every Vercel
    environment promotes in the environment of the app's own key (`OUTLAST_SECRET_KEY`).
    `project_id` (one id or several) limits it to those Vercel projects, for a team-level webhook
    that sees every project's deployments.

    Vercel redelivers any non-2xx answer, so deliveries it ignores on purpose are 200 with
    `ignored: true`, a `code` and the `reason` (also logged): another event type, another project,
    a Vercel environment `keys` does not name, a deployment without git metadata, a commit no
    task version was deployed from. Non-2xx only where a redelivery can succeed: 401 for a
    missing or wrong signature (the secret is being fixed or rotated), 503 while the runtime is
    unreachable, the runtime's own status for its errors; and 422 for a body that is not a Vercel
    event at all, which Vercel never sends.
    """

    def __init__(self, *, secret: str | None = None, secret_env: str = SECRET_ENV,
                 keys: Mapping[str, str] | None = None, project_id: str | Iterable[str] | None = None) -> None:
        secret = secret or os.environ.get(secret_env)
        if not secret:
            raise ConfigurationError(f"the Vercel webhook has no secret: set {secret_env} to the webhook's secret "
                                     "(Vercel shows it when the webhook is created) or pass secret=")
        self._secret = secret
        self.keys = dict(keys) if keys is not None else None
        projects = [project_id] if isinstance(project_id, str) else list(project_id or [])
        self.projects = frozenset(projects) or None
        self._clients: dict[str, AsyncClient] = {}

    def _client(self, request: AdapterRequest, target: str) -> AsyncClient | None:
        assert request.endpoints is not None
        if self.keys is None:
            return request.endpoints.async_client()
        key = self.keys.get(target)
        if key is None:
            return None
        if key not in self._clients:
            settings = request.endpoints.settings.client
            self._clients[key] = AsyncClient(settings.api_url, key, timeout=settings.timeout)
        return self._clients[key]

    async def __call__(self, request: AdapterRequest) -> AdapterResponse:
        signature = request.header(SIGNATURE_HEADER)
        if not signature:
            return error_response(401, "unauthorized", f"missing {SIGNATURE_HEADER} header", SIGNATURE_HEADER)
        if not verify_signature(request.body, signature, self._secret):
            return error_response(401, "unauthorized", f"{SIGNATURE_HEADER} does not match the body",
                                  SIGNATURE_HEADER)
        try:
            event = request.json()
        except ValueError as exc:
            return error_response(422, "invalid_request", f"the body is not JSON: {exc}", "body")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return error_response(422, "invalid_event", "not a Vercel webhook event (no `type`)", "type")
        kind = event["type"]
        if kind not in PROMOTING_EVENTS:
            return _ignored("other_event", f"{kind} events change nothing")
        project = deployment_project(event)
        if self.projects is not None and project not in self.projects:
            return _ignored("other_project", f"project {project or '(none)'} is not one this webhook serves "
                            f"({', '.join(sorted(self.projects))})", project=project)
        commit, target = deployment_commit(event)
        if not commit:
            return _ignored("no_git_commit", "the deployment has no git commit (payload.deployment.meta."
                            "githubCommitSha): only Git deployments map to task versions", warn=True, target=target)
        client = self._client(request, target)
        if client is None:
            return _ignored("other_target", f"no outlast environment is configured for Vercel {target}",
                            target=target, commit=commit)
        try:
            deployment = await AsyncDeployments(client).promote(commit=commit)
        except NotFoundError as exc:
            return _ignored("version_not_deployed", f"no task version was deployed from commit {commit[:12]} "
                            f"for Vercel {target} (add `outlast deploy --vercel` to the build step): {exc}",
                            warn=True, commit=commit, target=target)
        log.info("vercel %s: %s is now current in %s (commit %s)", kind, deployment.version, deployment.env, commit)
        return json_response({"promoted": True, "version": deployment.version, "environment": deployment.env,
                              "target": target, "commit": commit})


class Mountable(Protocol):
    def add_route(self, method: str, path: str, handler: Handler) -> None: ...


def mount(target: Mountable, *, path: str = DEFAULT_PATH, secret: str | None = None, secret_env: str = SECRET_ENV,
          keys: Mapping[str, str] | None = None, project_id: str | Iterable[str] | None = None) -> VercelWebhook:
    """Serve the webhook at `POST {prefix}{path}` (default `/outlast/vercel`)."""
    webhook = VercelWebhook(secret=secret, secret_env=secret_env, keys=keys, project_id=project_id)
    target.add_route("POST", path, webhook)
    return webhook
