import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from outlast.adapters.django import batch_trigger_on_commit, trigger_on_commit

from .models import Order
from .tasks import fulfil_order


class PaymentDeclined(Exception):
    pass


@csrf_exempt
def create_order(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    try:
        with transaction.atomic():
            order = Order.objects.create(email=data["email"])
            pending = trigger_on_commit(fulfil_order, {"order_id": order.id}, tags=[f"email:{order.email}"])
            if data.get("decline"):
                raise PaymentDeclined  # rolls the order back, and with it the trigger
    except PaymentDeclined:
        return JsonResponse({"error": "payment declined"}, status=402)
    return JsonResponse({"order_id": order.id, "run_id": pending.id}, status=201)


@csrf_exempt
def create_orders(request: HttpRequest) -> JsonResponse:
    emails = json.loads(request.body)["emails"]
    with transaction.atomic():
        orders = [Order.objects.create(email=email) for email in emails]
        pending = batch_trigger_on_commit(fulfil_order, [{"order_id": order.id} for order in orders])
    assert pending.handle is not None
    return JsonResponse({"run_ids": [run.id for run in pending.handle.runs]}, status=201)
