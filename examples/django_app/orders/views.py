import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from outlast.adapters.django import endpoints, trigger_on_commit

from .models import Order
from .tasks import send_receipt


@csrf_exempt  # an API endpoint for the example; a form view would keep CSRF protection
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    with transaction.atomic():
        order = Order.objects.create(email=data["email"], total_cents=int(data["total_cents"]))
        # Sent after COMMIT: the task never looks for an order that is not there yet, and an
        # exception that rolls the order back means no receipt at all.
        pending = trigger_on_commit(send_receipt, {"order_id": order.id}, tags=[f"order:{order.id}"])
    run_id = pending.id
    token = endpoints().client().create_public_token(run_id).token  # lets this browser follow the run
    return JsonResponse({"order_id": order.id, "run_id": run_id,
                         "stream": f"/outlast/runs/{run_id}/stream?token={token}"}, status=201)


@require_GET
def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, id=order_id)
    return JsonResponse({"id": order.id, "status": order.status, "receipt": order.receipt})
