"""Which task each non-HTTP Lambda event triggers: `@on_sqs("orders", task=process_order)` and friends.

Each rule names its source (queue, bucket, table or stream, schedule, SNS topic, EventBridge
source) and a task; decorating a function with the rule makes that function turn the record
into the payload (otherwise `_payloads` gives each kind's default). S3 rules also filter by
event name, in S3's own notation, and by key prefix and suffix, so one bucket can send created
and removed objects to different tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from outlast._errors import ConfigurationError
from outlast._tasks import Task, task_id_of

from ._events import S3Change
from ._payloads import DEFAULT_PAYLOADS, PayloadFn

__all__ = ["EventRoutes", "Rule", "on_dynamodb", "on_eventbridge", "on_kinesis", "on_s3", "on_schedule", "on_sns",
           "on_sqs", "routes"]

KINDS = ("sqs", "s3", "sns", "dynamodb", "kinesis", "schedule", "eventbridge")
S3_CREATED = ("s3:ObjectCreated:*",)


def _event_matches(pattern: str, name: str) -> bool:
    # S3's notation: `s3:ObjectCreated:*` is every created event, `s3:ObjectCreated:Put` only that one.
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


@dataclass
class Rule:
    """One route. Use it as a decorator to supply the payload function: `@on_sqs(...)` over `def f(record)`."""

    kind: str
    source: str
    task: Task[Any] | str
    payload: PayloadFn = field(default=lambda record: record)
    detail_type: str | None = None
    events: tuple[str, ...] = S3_CREATED  # S3 only
    prefix: str = ""
    suffix: str = ""

    def __call__(self, fn: PayloadFn) -> PayloadFn:
        self.payload = fn
        return fn

    @property
    def task_id(self) -> str:
        return task_id_of(self.task)

    def wants(self, change: S3Change) -> bool:
        """Whether this S3 rule takes the change: its event name, key prefix and key suffix."""
        return (any(_event_matches(pattern, change.event) for pattern in self.events)
                and change.key.startswith(self.prefix) and change.key.endswith(self.suffix))


def _s3_events(events: Iterable[str]) -> tuple[str, ...]:
    events = (events,) if isinstance(events, str) else tuple(events)
    bad = [name for name in events if not name.startswith("s3:") or len(name) <= len("s3:")]
    if not events or bad:
        raise ConfigurationError(f"S3 events are named as in the bucket's notification configuration, e.g. "
                                 f"'s3:ObjectCreated:*' or 's3:ObjectRemoved:Delete'; got {list(bad or events)}")
    return events


class EventRoutes:
    """A routing table from event sources to tasks; `routes` is the module-wide default one."""

    def __init__(self, table: Mapping[str, Task[Any] | str] | None = None) -> None:
        self.rules: dict[tuple[str, str], list[Rule]] = {}
        for spec, task in (table or {}).items():
            kind, _, source = spec.partition(":")
            self.add(kind, source, task)

    def add(self, kind: str, source: str, task: Task[Any] | str, *, payload: PayloadFn | None = None,
            detail_type: str | None = None, events: Iterable[str] = S3_CREATED, prefix: str = "",
            suffix: str = "") -> Rule:
        """Route events of `kind` from `source` to `task` (the table form: `{"sqs:orders": process_order}`).

        A bucket can have several S3 rules (each with its events and key filter); any other source
        has one, and adding another replaces it.
        """
        if kind not in KINDS:
            raise ConfigurationError(f"unknown event kind {kind!r} in a Lambda route; use one of {', '.join(KINDS)}")
        if not source:
            raise ConfigurationError(f"a {kind} route needs a source name, e.g. '{kind}:my-name'")
        rule = Rule(kind, source, task, payload or DEFAULT_PAYLOADS[kind], detail_type,
                    _s3_events(events) if kind == "s3" else S3_CREATED, prefix, suffix)
        slot = (kind, source if detail_type is None else f"{source}|{detail_type}")
        self.rules[slot] = [*self.rules.get(slot, []), rule] if kind == "s3" else [rule]
        return rule

    def sqs(self, queue: str, *, task: Task[Any] | str) -> Rule:
        """Each message of SQS queue `queue` (its name) triggers `task`; the message id is the idempotency key."""
        return self.add("sqs", queue, task)

    def s3(self, bucket: str, *, task: Task[Any] | str, events: Iterable[str] = S3_CREATED, prefix: str = "",
           suffix: str = "") -> Rule:
        """Object events of `bucket` named in `events` (S3's notation, default `s3:ObjectCreated:*`) whose key
        starts with `prefix` and ends with `suffix` trigger `task` with the object's bucket, key, size and etag.

        Takes S3 event notifications and S3 events delivered through EventBridge alike.
        """
        return self.add("s3", bucket, task, events=events, prefix=prefix, suffix=suffix)

    def sns(self, topic: str, *, task: Task[Any] | str) -> Rule:
        """Each notification of SNS topic `topic` (its name) triggers `task`."""
        return self.add("sns", topic, task)

    def dynamodb(self, table_or_stream_arn: str, *, task: Task[Any] | str) -> Rule:
        """Each change record of a DynamoDB stream (the table's name, its ARN or the stream's ARN) triggers `task`."""
        return self.add("dynamodb", table_or_stream_arn, task)

    def kinesis(self, stream: str, *, task: Task[Any] | str) -> Rule:
        """Each record of Kinesis data stream `stream` (its name or ARN) triggers `task` with the decoded data."""
        return self.add("kinesis", stream, task)

    def schedule(self, name: str, *, task: Task[Any] | str) -> Rule:
        """Each firing of the EventBridge rule or EventBridge Scheduler schedule named `name` triggers `task`.

        A Scheduler schedule outside the default group can also be named `group/name`.
        """
        return self.add("schedule", name, task)

    def eventbridge(self, source: str, *, task: Task[Any] | str, detail_type: str | None = None) -> Rule:
        """EventBridge events from `source` (and of `detail_type`, if given) trigger `task` with their `detail`."""
        return self.add("eventbridge", source, task, detail_type=detail_type)

    def find(self, kind: str, *names: str, detail_type: str | None = None) -> Rule | None:
        """The rule of the first of `names` (one source, spelled from most to least specific) that has one."""
        for name in names:
            if detail_type is not None and (kind, f"{name}|{detail_type}") in self.rules:
                return self.rules[(kind, f"{name}|{detail_type}")][0]
            if (kind, name) in self.rules:
                return self.rules[(kind, name)][0]
        return None

    def s3_rules(self, bucket: str) -> list[Rule]:
        return self.rules.get(("s3", bucket), [])


routes = EventRoutes()
on_sqs = routes.sqs
on_s3 = routes.s3
on_sns = routes.sns
on_dynamodb = routes.dynamodb
on_kinesis = routes.kinesis
on_schedule = routes.schedule
on_eventbridge = routes.eventbridge
