"""`handler = outlast_lambda_handler(app)`: HTTP events go to the ASGI app through Mangum, the rest to tasks.

Everything costly happens once per cold start, when the module is imported: settings, Mangum,
the event loop. The `AsyncClient` is made on the first invocation and kept for the next ones,
since a warm Lambda reuses the process (and its loop); the ASGI lifespan is off, so nothing
runs again per invocation. A trigger is one short request, bounded by the client's timeout
(`OUTLAST_TIMEOUT`, 5 s for adapters), so the function returns well before Lambda freezes it.

Every trigger carries an idempotency key made of the platform's own ids (message id, stream
event id, S3 sequencer, EventBridge event id), so whatever Lambda delivers again returns the run
it started the first time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from outlast._adapter import AdapterEndpoints, AdapterSettings
from outlast._errors import OutlastError

from ._events import arn_name, describe, dynamodb_table, event_kind, s3_change, s3_records
from ._routes import EventRoutes, Rule, routes

__all__ = ["EventTriggerError", "LambdaHandler", "UnroutedEventError", "outlast_lambda_handler"]

log = logging.getLogger("outlast.adapters.aws_lambda")
MAX_KEY = 400  # idempotency keys over this are hashed (the runtime accepts up to 512 characters)
# Sources Lambda polls in batches: a failed record goes back in `batchItemFailures`, by this id.
_BATCH_ITEM_ID = {"sqs": lambda r: r["messageId"], "dynamodb": lambda r: r["dynamodb"]["SequenceNumber"],
                  "kinesis": lambda r: r["kinesis"]["sequenceNumber"]}
_DECORATOR = {"sqs": "on_sqs", "dynamodb": "on_dynamodb", "kinesis": "on_kinesis", "s3": "on_s3", "sns": "on_sns"}


class UnroutedEventError(OutlastError):
    """An event no route matches, or of a kind the adapter does not route; the message names what arrived.

    Lambda retries it (or sends it to the function's dead-letter queue).
    """


class EventTriggerError(OutlastError):
    """Some records of an S3, SNS or EventBridge event could not be triggered; Lambda retries the event.

    Retrying is safe: each record's trigger carries an idempotency key, so records that did trigger
    return the same run.
    """


def _key(*parts: Any) -> str:
    key = ":".join(str(part) for part in parts)
    return key if len(key) <= MAX_KEY else f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _unrouted(kind: str, source: str) -> UnroutedEventError:
    return UnroutedEventError(f"no route for {kind} source {source!r}; add {_DECORATOR[kind]}({source!r}, task=...)")


class LambdaHandler:
    def __init__(self, app: Any = None, *, routes: EventRoutes = routes,
                 endpoints: AdapterEndpoints | None = None) -> None:
        self.app = app
        self.routes = routes
        # An app with Outlast installed shares its endpoints, so HTTP routes and events use one client.
        installed = getattr(getattr(app, "state", None), "outlast", None)
        self.endpoints = endpoints or getattr(installed, "endpoints", None) or AdapterEndpoints(
            AdapterSettings.from_mapping({}))
        self.mangum = None
        if app is not None:
            from mangum import Mangum

            self.mangum = Mangum(app, lifespan="off")
        self.loop = _process_loop()

    def __call__(self, event: dict[str, Any], context: Any = None) -> Any:
        kind = event_kind(event)
        if kind == "http":
            if self.mangum is None:
                raise UnroutedEventError("an HTTP event, but outlast_lambda_handler() was given no ASGI app")
            return self.mangum(event, context)
        if kind in _BATCH_ITEM_ID:
            return self.loop.run_until_complete(self._batch(kind, event))
        if kind == "s3":
            return self.loop.run_until_complete(self._s3(event))
        if kind == "sns":
            return self.loop.run_until_complete(self._sns(event))
        if kind in ("schedule", "eventbridge"):
            return self.loop.run_until_complete(self._eventbridge(kind, event))
        raise UnroutedEventError(f"cannot route {describe(event)}: the Lambda adapter routes HTTP (API Gateway, "
                                 "Function URLs, ALB), SQS, S3, SNS, DynamoDB Streams, Kinesis and EventBridge "
                                 "events (rules, Scheduler); handle this one before calling the handler")

    async def _trigger(self, rule: Rule, record: Mapping[str, Any], key: str, source: str) -> str:
        payload = rule.payload(record)
        client = self.endpoints.async_app_client()
        handle = await client.trigger(rule.task, payload, idempotency_key=key, metadata={"source": source})
        return handle.id

    async def _batch_record(self, kind: str, record: Mapping[str, Any]) -> str:
        arn = record["eventSourceARN"]
        if kind == "sqs":
            source, names, key = arn_name(arn), (arn_name(arn),), _key("sqs", record["messageId"])
        elif kind == "dynamodb":
            source = dynamodb_table(arn)
            names, key = (arn, arn.split("/stream/", 1)[0], source), _key("dynamodb", source, record["eventID"])
        else:
            source = arn_name(arn)
            names, key = (arn, source), _key("kinesis", source, record["eventID"])
        rule = self.routes.find(kind, *names)
        if rule is None:
            raise _unrouted(kind, source)
        return await self._trigger(rule, record, key, f"{kind}:{source}")

    async def _batch(self, kind: str, event: Mapping[str, Any]) -> dict[str, Any]:
        """One trigger per record; failed records go back in `batchItemFailures` for redelivery.

        Needs `ReportBatchItemFailures` on the event source mapping; without it, Lambda redelivers
        the whole batch whenever this returns any failure (still safe: the keys are the platform's
        ids). For streams Lambda resumes from the lowest failed sequence number.
        """
        records = event["Records"]
        results = await asyncio.gather(*(self._batch_record(kind, record) for record in records),
                                       return_exceptions=True)
        failures = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                item = _BATCH_ITEM_ID[kind](record)
                log.error("%s record %s was not triggered: %s", kind, item, result)
                failures.append({"itemIdentifier": item})
        return {"batchItemFailures": failures}

    async def _s3(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """One trigger per object event and matching rule; events no rule of the bucket wants are skipped."""
        triggers, ignored = [], 0
        for record in s3_records(event):
            change = s3_change(record)
            rules = self.routes.s3_rules(change.bucket)
            if not rules:
                triggers.append(_raise(_unrouted("s3", change.bucket)))
                continue
            wanted = [rule for rule in rules if rule.wants(change)]
            if not wanted:
                log.info("s3 %s of %s/%s: no rule of the bucket wants it", change.event, change.bucket, change.key)
                ignored += 1
            key = _key("s3", change.bucket, change.key, change.event, change.sequencer or change.etag)
            triggers += [self._trigger(rule, record, key, f"s3:{change.bucket}") for rule in wanted]
        return {**await self._all("s3", triggers), "ignored": ignored}

    async def _sns(self, event: Mapping[str, Any]) -> dict[str, Any]:
        triggers = []
        for record in event["Records"]:
            topic = arn_name(record["Sns"]["TopicArn"])
            rule = self.routes.find("sns", topic)
            triggers.append(_raise(_unrouted("sns", topic)) if rule is None else
                            self._trigger(rule, record, _key("sns", record["Sns"]["MessageId"]), f"sns:{topic}"))
        return await self._all("sns", triggers)

    async def _eventbridge(self, kind: str, event: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "schedule":
            # A rule's ARN ends in rule/<name>; a Scheduler schedule's in schedule/<group>/<name>.
            found = [(arn_name(arn), self.routes.find("schedule", arn, arn.split(":schedule/", 1)[-1], arn_name(arn)))
                     for arn in event.get("resources", [])]
        else:
            found = [(event["source"], self.routes.find("eventbridge", event["source"],
                                                        detail_type=event["detail-type"]))]
        rules = [(name, rule) for name, rule in found if rule is not None]
        if not rules:
            names = ", ".join(name for name, _ in found) or "(none)"
            raise UnroutedEventError(f"no route for {kind} event from {names} ({event['source']})")
        return await self._all(kind, [self._trigger(rule, event, _key(kind, event["id"], name), f"{kind}:{name}")
                                      for name, rule in rules])

    async def _all(self, kind: str, triggers: list[Awaitable[str]]) -> dict[str, Any]:
        results = await asyncio.gather(*triggers, return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            unrouted = all(isinstance(error, UnroutedEventError) for error in errors)
            raise (UnroutedEventError if unrouted else EventTriggerError)(
                f"{len(errors)} of {len(results)} {kind} record(s) not triggered: {errors[0]}")
        return {"runs": results}


async def _raise(error: Exception) -> str:
    # A record without a route fails like a record whose trigger failed: the others still go.
    raise error


def _process_loop() -> asyncio.AbstractEventLoop:
    # The loop Mangum also runs on; it outlives invocations, and so does the client made on it.
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


def outlast_lambda_handler(app: Any = None, *, routes: EventRoutes = routes,
                           endpoints: AdapterEndpoints | None = None) -> LambdaHandler:
    """The Lambda entry point: `handler = outlast_lambda_handler(app)` at module level.

    `app` is any ASGI app (FastAPI with `Outlast(app)` installed shares its client); `routes` maps
    SQS, S3, SNS, DynamoDB, Kinesis and EventBridge events to tasks (default: the rules made with
    `@on_sqs` & co.).
    """
    return LambdaHandler(app, routes=routes, endpoints=endpoints)
