from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self) -> None:
        from outlast.adapters.django import endpoints

        from .tasks import refund_order

        # The payment provider calls POST /outlast/webhooks/refunds, signed with OUTLAST_WEBHOOK_SECRET.
        if endpoints().settings.webhook_secret:
            endpoints().webhook("refunds", refund_order)
