"""Tasks of the Flask example; the runtime runs them (`outlast dev` in this folder)."""

from outlast import logger, metadata, task


@task(id="flask-build-report", retry={"max_attempts": 3}, max_duration=900)
def build_report(payload: dict, ctx) -> dict:
    logger.info("building report", account=payload["account"])
    rows = [{"month": month, "total": month * payload.get("scale", 1)} for month in range(1, 13)]
    metadata.set("rows", len(rows))
    return {"account": payload["account"], "rows": rows[-1:]}


@task(id="flask-payment-event")
def handle_payment_event(event: dict) -> dict:
    """Triggered by the signed webhook `POST /outlast/webhooks/payments`."""
    return {"payment": event["payment_id"], "status": event["status"]}
