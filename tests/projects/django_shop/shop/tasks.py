"""Tasks that use the Django ORM: they run in the runtime's task processes, which set Django up first."""

from outlast import task

from .models import Order


@task(id="dj-fulfil-order")
def fulfil_order(payload: dict) -> dict:
    order = Order.objects.get(id=payload["order_id"])  # the row is there: triggered after COMMIT
    order.status = "fulfilled"
    order.save(update_fields=["status"])
    return {"order_id": order.id, "email": order.email, "status": order.status}
