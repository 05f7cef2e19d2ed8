"""Which task each non-HTTP Lambda event triggers: `@on_sqs("orders", task=process_order)` and friends.

Each rule names its source (queue, bucket, schedule rule, SNS topic, EventBridge source) and a
task; decorating a function with the rule makes that function turn the record into the payload.
Without one, the payload is the message body (JSON-decoded when it is JSON), the S3 object's
location, or the EventBridge event's `detail`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from outlast._errors import ConfigurationError
from outlast._tasks import Task, task_id_of

__all__ = ["EventRoutes", "Rule", "on_eventbridge", "on_s3", "on_schedule", "on_sns", "on_sqs", "routes"]

PayloadFn = Callable[[Mapping[str, Any]], Any]
KINDS = ("sqs", "s3", "sns", "schedule", "eventbridge")


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _sqs_payload(record: Mapping[str, Any]) -> Any:
    return _json_or_text(record["body"])


def _sns_payload(record: Mapping[str, Any]) -> Any:
    return _json_or_text(record["Sns"]["Message"])


def _s3_payload(record: Mapping[str, Any]) -> Any:
    s3 = record["s3"]
    return {"bucket": s3["bucket"]["name"], "key": unquote_plus(s3["object"]["key"]),
            "size": s3["object"].get("size"), "etag": s3["object"].get("eTag"),
            "event": record.get("eventName"), "time": record.get("eventTime")}


def _schedule_payload(event: Mapping[str, Any]) -> Any:
    return {"time": event.get("time"), "event_id": event.get("id")}


def _detail_payload(event: Mapping[str, Any]) -> Any:
    return event.get("detail")


_DEFAULT_PAYLOADS: dict[str, PayloadFn] = {"sqs": _sqs_payload, "sns": _sns_payload, "s3": _s3_payload,
                                           "schedule": _schedule_payload, "eventbridge": _detail_payload}


@dataclass
class Rule:
    """One route. Use it as a decorator to supply the payload function: `@on_sqs(...)` over `def f(record)`."""

    kind: str
    source: str
    task: Task[Any] | str
    payload: PayloadFn = field(default=lambda record: record)
    detail_type: str | None = None

    def __call__(self, fn: PayloadFn) -> PayloadFn:
        self.payload = fn
        return fn

    @property
    def task_id(self) -> str:
        return task_id_of(self.task)


class EventRoutes:
    """A routing table from event sources to tasks; `routes` is the module-wide default one."""

    def __init__(self, table: Mapping[str, Task[Any] | str] | None = None) -> None:
        self.rules: dict[tuple[str, str], Rule] = {}
        for spec, task in (table or {}).items():
            kind, _, source = spec.partition(":")
            self.add(kind, source, task)

    def add(self, kind: str, source: str, task: Task[Any] | str, *, payload: PayloadFn | None = None,
            detail_type: str | None = None) -> Rule:
        """Route events of `kind` from `source` to `task` (the table form: `{"sqs:orders": process_order}`)."""
        if kind not in KINDS:
            raise ConfigurationError(f"unknown event kind {kind!r} in a Lambda route; use one of {', '.join(KINDS)}")
        if not source:
            raise ConfigurationError(f"a {kind} route needs a source name, e.g. '{kind}:my-name'")
        rule = Rule(kind, source, task, payload or _DEFAULT_PAYLOADS[kind], detail_type)
        self.rules[(kind, source if detail_type is None else f"{source}|{detail_type}")] = rule
        return rule

    def sqs(self, queue: str, *, task: Task[Any] | str) -> Rule:
        """Each message of SQS queue `queue` (its name) triggers `task`; the message id is the idempotency key."""
        return self.add("sqs", queue, task)

    def s3(self, bucket: str, *, task: Task[Any] | str) -> Rule:
        """Each object event of `bucket` triggers `task` with the object's bucket, key, size and etag."""
        return self.add("s3", bucket, task)

    def sns(self, topic: str, *, task: Task[Any] | str) -> Rule:
        """Each notification of SNS topic `topic` (its name) triggers `task`."""
        return self.add("sns", topic, task)

    def schedule(self, rule: str, *, task: Task[Any] | str) -> Rule:
        """Each firing of the EventBridge schedule rule named `rule` triggers `task`."""
        return self.add("schedule", rule, task)

    def eventbridge(self, source: str, *, task: Task[Any] | str, detail_type: str | None = None) -> Rule:
        """EventBridge events from `source` (and of `detail_type`, if given) trigger `task` with their `detail`."""
        return self.add("eventbridge", source, task, detail_type=detail_type)

    def find(self, kind: str, source: str, detail_type: str | None = None) -> Rule | None:
        if detail_type is not None:
            rule = self.rules.get((kind, f"{source}|{detail_type}"))
            if rule is not None:
                return rule
        return self.rules.get((kind, source))


routes = EventRoutes()
on_sqs = routes.sqs
on_s3 = routes.s3
on_sns = routes.sns
on_schedule = routes.schedule
on_eventbridge = routes.eventbridge
