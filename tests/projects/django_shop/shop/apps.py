from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self) -> None:
        from outlast.adapters.django import endpoints

        from .tasks import fulfil_order

        # POST /outlast/webhooks/orders, signed with OUTLAST["WEBHOOK_SECRET"], triggers fulfil_order.
        endpoints().webhook("orders", fulfil_order)
