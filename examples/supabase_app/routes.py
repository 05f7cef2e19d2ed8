"""Which row changes start which tasks. The receiver and the outbox drainer both read these routes."""

from tasks import forget_customer, fulfil_order, notify_shipped

from outlast.adapters.supabase import on_delete, on_insert, on_update

on_insert("public.orders", task=fulfil_order, when=lambda row: row["status"] == "paid", tags=["orders"])
on_update("public.orders", task=notify_shipped,
          when=lambda row, old: row["status"] == "shipped" and old["status"] != "shipped")
on_delete("public.customers", task=forget_customer, payload=lambda event: event.old_record["id"])
