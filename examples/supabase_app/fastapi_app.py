"""The same receiver inside a FastAPI app, next to its other routes: `uvicorn fastapi_app:app`.

Deliveries go to POST /outlast/supabase (Flask: `mount(outlast)` before `outlast.init_app(app)`;
Django: `mount(outlast.adapters.django.endpoints())` in an AppConfig.ready()).
"""

import routes  # noqa: F401
from fastapi import FastAPI

from outlast.adapters.fastapi import Outlast
from outlast.adapters.supabase import mount

app = FastAPI()
outlast = Outlast(app)
mount(outlast)
