"""What a routed task receives by default from each kind of Lambda event (a rule's own function replaces it).

SQS, SNS and Kinesis: the message, JSON-decoded when it is JSON. S3: the object's location and
the event's name. DynamoDB: the change with its images as plain JSON (DynamoDB's typed
`{"N": "5"}` attribute values turned into `5`). EventBridge: the event's `detail`; schedules: the
firing's time, event id and schedule name.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from ._events import arn_name, dynamodb_table, s3_change

__all__ = ["DEFAULT_PAYLOADS", "PayloadFn", "plain_attributes"]

PayloadFn = Callable[[Mapping[str, Any]], Any]


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _plain(value: Mapping[str, Any]) -> Any:
    """One DynamoDB attribute value (`{"S": "a"}`, `{"N": "1"}`, `{"M": {...}}`, ...) as plain JSON."""
    (tag, inner), = value.items()
    if tag == "N":
        return _number(inner)
    if tag == "NS":
        return [_number(item) for item in inner]
    if tag == "NULL":
        return None
    if tag == "M":
        return plain_attributes(inner)
    if tag == "L":
        return [_plain(item) for item in inner]
    return inner  # S, B and BS (base64 text), SS, BOOL


def plain_attributes(item: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A DynamoDB item (`Keys`, `NewImage`, `OldImage`) with every attribute value as plain JSON."""
    return None if item is None else {name: _plain(value) for name, value in item.items()}


def _sqs(record: Mapping[str, Any]) -> Any:
    return _json_or_text(record["body"])


def _sns(record: Mapping[str, Any]) -> Any:
    return _json_or_text(record["Sns"]["Message"])


def _s3(record: Mapping[str, Any]) -> Any:
    change = s3_change(record)
    return {"bucket": change.bucket, "key": change.key, "size": change.size, "etag": change.etag,
            "event": change.event, "time": change.time}


def _dynamodb(record: Mapping[str, Any]) -> Any:
    stream = record["dynamodb"]
    return {"event": record["eventName"], "table": dynamodb_table(record["eventSourceARN"]),
            "keys": plain_attributes(stream.get("Keys")), "new": plain_attributes(stream.get("NewImage")),
            "old": plain_attributes(stream.get("OldImage")), "sequence_number": stream.get("SequenceNumber")}


def _kinesis(record: Mapping[str, Any]) -> Any:
    data = record["kinesis"]["data"]
    try:
        return _json_or_text(base64.b64decode(data, validate=True).decode())
    except (binascii.Error, UnicodeDecodeError):
        return data  # binary records stay base64, as Kinesis sent them


def _schedule(event: Mapping[str, Any]) -> Any:
    resources = event.get("resources") or []
    return {"time": event.get("time"), "event_id": event.get("id"),
            "schedule": arn_name(resources[0]) if resources else None}


def _detail(event: Mapping[str, Any]) -> Any:
    return event.get("detail")


DEFAULT_PAYLOADS: dict[str, PayloadFn] = {"sqs": _sqs, "sns": _sns, "s3": _s3, "dynamodb": _dynamodb,
                                          "kinesis": _kinesis, "schedule": _schedule, "eventbridge": _detail}
