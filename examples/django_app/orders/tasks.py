"""Tasks of the Django example. The runtime's task processes set Django up first, so the ORM works here."""

from outlast import logger, metadata, task

from .models import Order


@task(id="django-send-receipt", retry={"max_attempts": 5, "min_delay": 2, "factor": 2})
def send_receipt(payload: dict) -> dict:
    order = Order.objects.get(id=payload["order_id"])  # committed before the trigger was sent
    metadata.set("step", "rendering")
    order.receipt = f"Order {order.id}: {order.total_cents / 100:.2f} EUR, thank you!"
    order.status = "receipt_sent"
    order.save(update_fields=["receipt", "status"])
    logger.info("receipt sent", order=order.id, to=order.email)
    return {"order_id": order.id, "to": order.email}


@task(id="django-refund-order")
def refund_order(event: dict) -> dict:
    updated = Order.objects.filter(id=event["order_id"]).update(status="refunded")
    return {"order_id": event["order_id"], "refunded": bool(updated)}
