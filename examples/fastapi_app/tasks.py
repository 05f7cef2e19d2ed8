"""Tasks of the FastAPI example; the runtime runs them (`outlast dev` in this folder)."""

from pydantic import BaseModel

from outlast import logger, metadata, schema_task, task


class Signup(BaseModel):
    email: str
    name: str


@schema_task(id="fastapi-welcome-email", schema=Signup, retry={"max_attempts": 3})
async def send_welcome_email(user: Signup, ctx) -> dict:
    logger.info("sending welcome email", email=user.email)
    metadata.set("step", "sent")
    return {"to": user.email, "subject": f"Welcome, {user.name}!"}


@task(id="fastapi-order-event")
def handle_order_event(event: dict) -> dict:
    """Triggered by the signed webhook `POST /outlast/webhooks/orders`."""
    return {"order": event["order_id"], "event": event["type"]}
