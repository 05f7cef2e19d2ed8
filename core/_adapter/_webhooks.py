"""Signed inbound webhooks: HMAC-SHA256 over `{timestamp}.{raw body}`, checked once for every adapter.

A sender signs each delivery with a shared secret and sends three headers:

    Outlast-Webhook-Id:         the delivery id (unique per delivery, the same on redelivery)
    Outlast-Webhook-Timestamp:  seconds since the epoch when it was signed
    Outlast-Webhook-Signature:  v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>, several allowed

A delivery is accepted when its timestamp is inside the freshness window and any signature
matches any of the receiver's secrets (two while a key is rotated). A replay inside the window
carries the same delivery id, which is the trigger's idempotency key, so it returns the run of
the first delivery instead of starting another.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Sequence

from outlast._client import trigger_options
from outlast._errors import OutlastError

from ._http import AdapterRequest, AdapterResponse, error_response, json_response

__all__ = ["ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookSignatureError", "sign_webhook",
           "verify_signature"]

ID_HEADER = "outlast-webhook-id"
TIMESTAMP_HEADER = "outlast-webhook-timestamp"
SIGNATURE_HEADER = "outlast-webhook-signature"
MAX_DELIVERY_ID = 200


class WebhookSignatureError(OutlastError):
    """A delivery whose signature, timestamp or id does not check out; `field` names the header."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _digest(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_webhook(secret: str, body: bytes, *, timestamp: float | None = None,
                 delivery_id: str | None = None) -> dict[str, str]:
    """The headers a sender adds to a delivery of `body` (use the exact bytes it sends)."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    return {
        "Outlast-Webhook-Id": delivery_id or f"dlv_{uuid.uuid4().hex}",
        "Outlast-Webhook-Timestamp": stamp,
        "Outlast-Webhook-Signature": f"v1={_digest(secret, stamp, body)}",
    }


def verify_signature(request: AdapterRequest, secrets: Sequence[str], *, tolerance: float = 300.0,
                     now: float | None = None, id_header: str = ID_HEADER,
                     timestamp_header: str = TIMESTAMP_HEADER,
                     signature_header: str = SIGNATURE_HEADER) -> str:
    """Check a delivery's signature over its raw body; returns its delivery id.

    Raises `WebhookSignatureError` (with `.field`, the header at fault) when the id is missing, the
    timestamp is outside `tolerance` seconds of now (either way: clocks drift), or no signature
    matches any secret. Every candidate is compared in constant time.
    """
    delivery_id = (request.header(id_header) or "").strip()
    if not delivery_id or len(delivery_id) > MAX_DELIVERY_ID:
        raise WebhookSignatureError(f"missing or over-long {id_header} header", id_header)
    stamp = (request.header(timestamp_header) or "").strip()
    if not stamp.isdigit():
        raise WebhookSignatureError(f"{timestamp_header} must be seconds since the epoch", timestamp_header)
    age = (time.time() if now is None else now) - int(stamp)
    if abs(age) > tolerance:
        raise WebhookSignatureError(
            f"{timestamp_header} is {abs(age):.0f}s {'old' if age > 0 else 'in the future'}; "
            f"deliveries are accepted for {tolerance:g}s", timestamp_header)
    offered = [part.strip()[3:] for part in (request.header(signature_header) or "").replace(",", " ").split()
               if part.strip().startswith("v1=")]
    if not offered:
        raise WebhookSignatureError(f"missing {signature_header} header (v1=<hex>)", signature_header)
    expected = [_digest(secret, stamp, request.body) for secret in secrets]
    # Check every pair without stopping early, so timing says nothing about which one matched.
    matched = False
    for candidate in offered:
        for digest in expected:
            matched |= hmac.compare_digest(candidate.encode(), digest.encode())
    if not matched:
        raise WebhookSignatureError("signature does not match", signature_header)
    return delivery_id


async def receive_webhook(request: AdapterRequest) -> AdapterResponse:
    endpoints = request.endpoints
    assert endpoints is not None
    name = request.path_params["name"]
    hook = endpoints.webhooks.get(name)
    if hook is None:
        return error_response(404, "not_found", f"no webhook named {name!r}", "name")
    try:
        delivery_id = verify_signature(request, hook.secrets, tolerance=endpoints.settings.webhook_tolerance)
    except WebhookSignatureError as exc:
        return error_response(401, "invalid_signature", str(exc), exc.field)
    try:
        payload = request.json()
    except ValueError as exc:
        return error_response(422, "invalid_request", f"webhook body is not JSON: {exc}", "body")
    options = trigger_options(idempotency_key=f"webhook:{name}:{delivery_id}",
                              metadata={"webhook": name, "delivery_id": delivery_id})
    handle = await endpoints.async_client().trigger(hook.task, payload, options)
    body = {"run_id": handle.id, "task": handle.task, "duplicate": handle.is_cached}
    return json_response(body, status=200 if handle.is_cached else 202)
