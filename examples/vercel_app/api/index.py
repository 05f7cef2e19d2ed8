"""The Vercel Python function: a FastAPI app that triggers tasks and receives Vercel's deployment webhook.

Vercel serves `app` from `api/index.py`; vercel.json routes every path here. Set in the Vercel project:
OUTLAST_API_URL, OUTLAST_SECRET_KEY (the prod key for Production, the dev key for Preview),
OUTLAST_VERCEL_WEBHOOK_SECRET (the secret Vercel shows for the webhook pointing at /outlast/vercel).
"""

import sys
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tasks.py sits at the project root

from tasks import Report, monthly_report

from outlast.adapters import vercel
from outlast.adapters.fastapi import Outlast, OutlastClient

app = FastAPI()
outlast = Outlast(app, tasks=[monthly_report])
# POST /outlast/vercel: on deployment.succeeded/promoted, the task version built from the same commit
# becomes current. Every trigger below also carries this function's commit (VERCEL_GIT_COMMIT_SHA), so
# its runs use that version even while another deployment rolls out.
vercel.mount(outlast)


@app.post("/api/reports", status_code=202)
async def request_report(report: Report, client: Annotated[OutlastClient, Depends(outlast.client)]) -> dict:
    handle = await client.trigger(monthly_report, report, tags=[f"account:{report.account_id}"])
    token = await client.public_token(handle.id, ttl="15m")
    return {"run_id": handle.id, "token": token.token, "stream": f"/outlast/runs/{handle.id}/stream"}
