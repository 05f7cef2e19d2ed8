"""Ship a Vercel web app and its outlast tasks together.

    # build step (vercel.json "buildCommand"): deploy the task version of this commit
    outlast deploy --vercel

    # api/index.py: the webhook makes that version current when Vercel promotes the deployment
    from outlast.adapters.fastapi import Outlast
    from outlast.adapters.vercel import mount
    outlast = Outlast(app); mount(outlast)          # POST /outlast/vercel

The SDK sends the function's commit (VERCEL_GIT_COMMIT_SHA) with every trigger, so each run uses the
task version of the web code that triggered it. `VercelEnvSync` (and `outlast env pull-vercel`)
copies a Vercel environment's variables into the outlast environment.
"""

from ._asgi import asgi_app
from ._env_sync import EnvDiff, VercelAPIError, VercelEnvSync
from ._webhook import (
    PROMOTING_EVENTS,
    SECRET_ENV,
    SIGNATURE_HEADER,
    VercelWebhook,
    deployment_commit,
    deployment_project,
    mount,
    sign,
    verify_signature,
)

__all__ = [
    "PROMOTING_EVENTS",
    "SECRET_ENV",
    "SIGNATURE_HEADER",
    "EnvDiff",
    "VercelAPIError",
    "VercelEnvSync",
    "VercelWebhook",
    "asgi_app",
    "deployment_commit",
    "deployment_project",
    "mount",
    "sign",
    "verify_signature",
]
