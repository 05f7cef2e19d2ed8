"""Tasks that Supabase row changes trigger in tests/adapters/test_supabase.py."""

from outlast import task


@task(id="sb-fulfil-order")
def fulfil_order(event: dict) -> dict:
    return {"order_id": event["record"]["id"], "email": event["record"]["email"], "type": event["type"]}


@task(id="sb-order-shipped")
def order_shipped(event: dict) -> dict:
    return {"order_id": event["record"]["id"], "was": event["old_record"]["status"], "now": event["record"]["status"]}


@task(id="sb-order-deleted")
def order_deleted(order_id: int) -> dict:
    return {"deleted": order_id}


@task(id="sb-record-payment")
def record_payment(event: dict) -> dict:
    return {"payment_id": event["record"]["id"], "amount": event["record"]["amount"]}
