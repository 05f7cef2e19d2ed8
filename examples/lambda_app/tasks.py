"""Tasks of the Lambda example; the runtime runs them (`outlast dev` in this folder), not the Lambda."""

from outlast import logger, task


@task(id="lambda-ingest", max_duration=3600)
def ingest(batch: dict) -> dict:
    """Takes a batch of any size: above 256 KiB the Lambda stores it in S3 and the task gets it back."""
    logger.info("ingesting", items=len(batch["items"]))
    return {"source": batch.get("source"), "items": len(batch["items"]), "total": sum(batch["items"])}


@task(id="lambda-process-order")
def process_order(order: dict) -> dict:
    return {"order_id": order["order_id"], "charged": order["amount"]}


@task(id="lambda-thumbnail")
def make_thumbnail(obj: dict) -> dict:
    return {"thumbnail": f"thumbs/{obj['key']}", "from_bytes": obj["size"]}


@task(id="lambda-nightly-cleanup")
def nightly_cleanup(tick: dict) -> dict:
    return {"cleaned_at": tick["time"]}


@task(id="lambda-alert")
def page_oncall(alert: dict) -> dict:
    return {"paged": alert["severity"] == "critical", "alert": alert["name"]}


@task(id="lambda-invoice-paid")
def invoice_paid(detail: dict) -> dict:
    return {"invoice": detail["invoice_id"]}


@task(id="lambda-forget-thumbnail")
def forget_thumbnail(obj: dict) -> dict:
    return {"removed": f"thumbs/{obj['key']}", "because": obj["event"]}


@task(id="lambda-order-changed")
def order_changed(change: dict) -> dict:
    """A DynamoDB stream record: `event` is INSERT, MODIFY or REMOVE; `new`/`old` are the item's images."""
    new, old = change["new"] or {}, change["old"] or {}
    return {"order": change["keys"]["order_id"], "event": change["event"],
            "status": [old.get("status"), new.get("status")]}


@task(id="lambda-click")
def record_click(click: dict) -> dict:
    return {"page": click["page"], "user": click["user"]}
