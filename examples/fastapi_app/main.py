"""A FastAPI app that hands slow work to outlast: `uvicorn main:app` with OUTLAST_API_URL and OUTLAST_SECRET_KEY set."""

from typing import Annotated

from fastapi import Depends, FastAPI
from tasks import Signup, handle_order_event, send_welcome_email

from outlast.adapters.fastapi import Outlast, OutlastClient, SyncOutlastClient

app = FastAPI()
# Lifespan-managed client, /outlast/{runs,webhooks,health} and trace ids copied into runs' metadata.
# `tasks` are what /outlast/health checks the runtime has (default: every task this process declares).
outlast = Outlast(app, tasks=[send_welcome_email], webhooks={"orders": handle_order_event})


@app.post("/signup", status_code=202)
async def signup(user: Signup, client: Annotated[OutlastClient, Depends(outlast.client)]) -> dict:
    handle = await client.trigger(send_welcome_email, user, tags=[f"user:{user.email}"])
    # The browser follows the run at /outlast/runs/{id}/stream with this token; it can read that run only.
    token = await client.public_token(handle.id, ttl="15m")
    return {"run_id": handle.id, "token": token.token, "stream": f"/outlast/runs/{handle.id}/stream"}


@app.post("/signup-sync", status_code=202)
def signup_sync(user: Signup, client: Annotated[SyncOutlastClient, Depends(outlast.sync_client)]) -> dict:
    handle = client.trigger("fastapi-welcome-email", user.model_dump())  # by id works too
    return {"run_id": handle.id}
