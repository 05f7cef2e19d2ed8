"""Tasks of the Supabase example. They run on the outlast runtime, which has SUPABASE_URL and
SUPABASE_SERVICE_ROLE_KEY in its environment and passes them on (OUTLAST_TASK_PASS_ENV=SUPABASE_*),
and reach the project through `supabase_client()`."""

from outlast import logger, task
from outlast.adapters.supabase import supabase_client


@task(id="supabase-fulfil-order", retry={"max_attempts": 5, "min_delay": 2, "factor": 2}, max_duration=3600)
def fulfil_order(event: dict) -> dict:
    order = event["record"]
    logger.info("fulfilling", order=order["id"], table=event["table"])
    # ... call the warehouse, print labels: as long as it takes, no Edge Function wall clock applies ...
    supabase_client().table("orders").update({"status": "fulfilling"}).eq("id", order["id"]).execute()
    return {"order_id": order["id"]}


@task(id="supabase-notify-shipped")
def notify_shipped(event: dict) -> dict:
    order = event["record"]
    logger.info("shipped", order=order["id"], was=event["old_record"]["status"])
    return {"order_id": order["id"], "email": order["email"]}


@task(id="supabase-forget-customer")
def forget_customer(customer_id: int) -> dict:
    supabase_client().table("newsletter").delete().eq("customer_id", customer_id).execute()
    return {"customer_id": customer_id}
