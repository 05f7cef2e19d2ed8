"""The receiver on its own: `uvicorn receiver:app --port 8000`.

Needs OUTLAST_API_URL, OUTLAST_SECRET_KEY (the runtime) and OUTLAST_SUPABASE_SECRET (the value the
database triggers send in `x-outlast-secret`). Deliveries go to POST /supabase; GET /health says
whether the runtime is reachable and the routed tasks are deployed.
"""

import routes  # noqa: F401  (declares the routes on the default router)

from outlast.adapters.supabase import asgi_app

app = asgi_app()
