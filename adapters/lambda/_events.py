"""What a Lambda event is, from the shape AWS gives each source, and the parts of it routing needs.

AWS sends no "type" field: SQS, S3, SNS, DynamoDB Streams and Kinesis batch records under
`Records` with an `eventSource`; EventBridge (rules, Scheduler, S3 through EventBridge) sends an
envelope with `source` and `detail-type`; API Gateway, Function URLs and ALB send a
`requestContext` (the shapes Mangum takes). Anything else (CloudWatch Logs `awslogs`, Cognito
triggers, Kafka batches, ...) is named by `describe` so the error says what arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

__all__ = ["S3Change", "arn_name", "describe", "dynamodb_table", "event_kind", "s3_change", "s3_records"]

_RECORD_SOURCES = {"aws:sqs": "sqs", "aws:s3": "s3", "aws:sns": "sns", "aws:dynamodb": "dynamodb",
                   "aws:kinesis": "kinesis"}
_SCHEDULERS = ("aws.events", "aws.scheduler")  # EventBridge rules, EventBridge Scheduler

# S3's EventBridge detail types, in the notation of S3 event notifications (`s3:ObjectCreated:Put`).
_CREATED_REASONS = {"PutObject": "Put", "POST Object": "Post", "CopyObject": "Copy",
                    "CompleteMultipartUpload": "CompleteMultipartUpload"}
_S3_DETAIL_TYPES = {
    "Object Restore Initiated": "s3:ObjectRestore:Post",
    "Object Restore Completed": "s3:ObjectRestore:Completed",
    "Object Restore Expired": "s3:ObjectRestore:Delete",
    "Object Tags Added": "s3:ObjectTagging:Put",
    "Object Tags Deleted": "s3:ObjectTagging:Delete",
    "Object ACL Updated": "s3:ObjectAcl:Put",
    "Object Storage Class Changed": "s3:LifecycleTransition",
    "Object Access Tier Changed": "s3:IntelligentTiering",
}


def arn_name(arn: str) -> str:
    """The resource name at the end of an ARN: `...:queue-name`, `...:rule/name`, `...:schedule/group/name`."""
    return arn.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def _is_http(event: Mapping[str, Any]) -> bool:
    # The shapes Mangum infers a handler for: API Gateway v1 and v2, Function URLs, ALB, Lambda@Edge.
    context = event.get("requestContext")
    if isinstance(context, Mapping) and ("resource" in event or "version" in event or "elb" in context):
        return True
    records = event.get("Records")
    return isinstance(records, list) and bool(records) and isinstance(records[0], Mapping) and "cf" in records[0]


def event_kind(event: Mapping[str, Any]) -> str:
    """'sqs', 's3', 'sns', 'dynamodb', 'kinesis', 'schedule', 'eventbridge', 'http', or 'unknown'."""
    if not isinstance(event, Mapping):
        return "unknown"
    if _is_http(event):
        return "http"
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        return _RECORD_SOURCES.get(records[0].get("eventSource") or records[0].get("EventSource"), "unknown")
    if isinstance(event.get("detail-type"), str) and isinstance(event.get("source"), str):
        if event["detail-type"] == "Scheduled Event" and event["source"] in _SCHEDULERS:
            return "schedule"
        detail = event.get("detail")
        # S3's own object events; other aws.s3 events (CloudTrail API calls) are plain EventBridge events.
        is_object_event = isinstance(detail, Mapping) and "bucket" in detail and "object" in detail
        return "s3" if event["source"] == "aws.s3" and is_object_event else "eventbridge"
    return "unknown"


def describe(event: Any) -> str:
    """What an event looks like, for an error about it: its source, or else its top-level keys."""
    if not isinstance(event, Mapping):
        return f"a {type(event).__name__}, not a JSON object"
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        source = records[0].get("eventSource") or records[0].get("EventSource")
        return f"records from {source}" if source else "records without an eventSource"
    if "awslogs" in event:
        return "a CloudWatch Logs subscription event (awslogs)"
    if "triggerSource" in event and "userPoolId" in event:
        return f"a Cognito user pool trigger ({event['triggerSource']})"
    if event.get("eventSource") in ("aws:kafka", "SelfManagedKafka"):
        return f"a Kafka batch ({event['eventSource']})"
    if "requestContext" in event:
        return "an HTTP event"
    if isinstance(event.get("source"), str) and isinstance(event.get("detail-type"), str):
        return f"an EventBridge event ({event['source']}, {event['detail-type']})"
    keys = ", ".join(sorted(map(str, event))[:8]) or "no keys"
    return f"an event with {keys}"


def dynamodb_table(stream_arn: str) -> str:
    """`arn:aws:dynamodb:region:account:table/Orders/stream/2026-...` -> `Orders`."""
    _, _, rest = stream_arn.partition(":table/")
    return rest.split("/", 1)[0] if rest else arn_name(stream_arn)


@dataclass(frozen=True)
class S3Change:
    """One object event, from an S3 notification record or an S3 event through EventBridge."""

    bucket: str
    key: str  # decoded: the object's real key
    event: str  # in S3's notification notation: s3:ObjectCreated:Put, s3:ObjectRemoved:Delete, ...
    sequencer: str | None
    size: int | None
    etag: str | None
    time: str | None
    version_id: str | None


def _eventbridge_s3_name(detail_type: str, detail: Mapping[str, Any]) -> str:
    reason = detail.get("reason") or ""
    if detail_type == "Object Created":
        return f"s3:ObjectCreated:{_CREATED_REASONS.get(reason, reason.replace(' ', ''))}"
    if detail_type == "Object Deleted":
        marker = detail.get("deletion-type") == "Delete Marker Created"
        family = "LifecycleExpiration" if reason == "Lifecycle Expiration" else "ObjectRemoved"
        return f"s3:{family}:{'DeleteMarkerCreated' if marker else 'Delete'}"
    return _S3_DETAIL_TYPES.get(detail_type, f"s3:{detail_type.replace(' ', '')}")


def s3_change(record: Mapping[str, Any]) -> S3Change:
    """An `S3Change` from one notification record (`{"s3": ...}`) or one EventBridge envelope (`aws.s3`)."""
    if "s3" in record:
        s3 = record["s3"]
        obj = s3["object"]
        # Notification keys are URL-encoded ("red flower.jpg" arrives as "red+flower.jpg").
        return S3Change(s3["bucket"]["name"], unquote_plus(obj["key"]), f"s3:{record['eventName']}",
                        obj.get("sequencer"), obj.get("size"), obj.get("eTag"), record.get("eventTime"),
                        obj.get("versionId"))
    detail = record["detail"]
    obj = detail["object"]
    return S3Change(detail["bucket"]["name"], obj["key"], _eventbridge_s3_name(record["detail-type"], detail),
                    obj.get("sequencer"), obj.get("size"), obj.get("etag"), record.get("time"),
                    obj.get("version-id"))


def s3_records(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The records of an S3 notification, or the EventBridge envelope as its one record."""
    return event.get("Records", [event])
