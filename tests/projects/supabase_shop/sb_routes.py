"""The routing table of the test project: which row changes trigger which tasks."""

from sb_tasks import fulfil_order, order_deleted, order_shipped, record_payment

from outlast.adapters.supabase import Router

router = Router()
router.on_insert("public.orders", task=fulfil_order, when=lambda row: row["status"] == "paid")
router.on_update("public.orders", task=order_shipped,
                 when=lambda row, old: row["status"] == "shipped" and old["status"] != "shipped")
router.on_delete("public.orders", task=order_deleted, payload=lambda event: event.old_record["id"])
router.on_insert("public.payments", task=record_payment, tags=["payments"])
router.on_insert("public.invoices", task=fulfil_order)  # a webhook made in the Supabase dashboard
