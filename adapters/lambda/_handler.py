"""`handler = outlast_lambda_handler(app)`: HTTP events go to the ASGI app through Mangum, the rest to tasks.

Everything costly happens once per cold start, when the module is imported: settings, Mangum,
the event loop. The `AsyncClient` is made on the first invocation and kept for the next ones,
since a warm Lambda reuses the process (and its loop); the ASGI lifespan is off, so nothing
runs again per invocation. A trigger is one short request, bounded by the client's timeout
(`OUTLAST_TIMEOUT`, 5 s for adapters), so the function returns well before Lambda freezes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from outlast._adapter import AdapterEndpoints, AdapterSettings
from outlast._errors import OutlastError

from ._routes import EventRoutes, Rule, routes

__all__ = ["EventTriggerError", "LambdaHandler", "UnroutedEventError", "event_kind", "outlast_lambda_handler"]

log = logging.getLogger("outlast.adapters.aws_lambda")
MAX_KEY = 400  # idempotency keys over this are hashed (the runtime accepts up to 512 characters)


class UnroutedEventError(OutlastError):
    """An event no route matches; Lambda retries it (or sends it to the function's dead-letter queue)."""


class EventTriggerError(OutlastError):
    """Some records of an S3, SNS or EventBridge event could not be triggered; Lambda retries the event.

    Retrying is safe: each record's trigger carries an idempotency key, so records that did trigger
    return the same run.
    """


def _name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def _key(*parts: Any) -> str:
    key = ":".join(str(part) for part in parts)
    return key if len(key) <= MAX_KEY else f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def event_kind(event: Mapping[str, Any]) -> str:
    """'sqs', 's3', 'sns', 'schedule', 'eventbridge', or 'http' for anything Mangum should take."""
    records = event.get("Records")
    if isinstance(records, list) and records:
        source = records[0].get("eventSource") or records[0].get("EventSource")
        return {"aws:sqs": "sqs", "aws:s3": "s3", "aws:sns": "sns"}.get(source, f"unknown ({source})")
    if "detail-type" in event and "source" in event:
        is_schedule = event["source"] == "aws.events" and event["detail-type"] == "Scheduled Event"
        return "schedule" if is_schedule else "eventbridge"
    return "http"


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
        if kind == "sqs":
            return self.loop.run_until_complete(self._sqs(event))
        if kind in ("s3", "sns"):
            return self.loop.run_until_complete(self._records(kind, event))
        if kind in ("schedule", "eventbridge"):
            return self.loop.run_until_complete(self._eventbridge(kind, event))
        raise UnroutedEventError(f"cannot handle Lambda events of kind {kind}")

    async def _trigger(self, rule: Rule, record: Mapping[str, Any], key: str, source: str) -> str:
        payload = rule.payload(record)
        client = self.endpoints.async_app_client()
        handle = await client.trigger(rule.task, payload, idempotency_key=key, metadata={"source": source})
        return handle.id

    async def _sqs(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """One trigger per message; failed messages go back in `batchItemFailures` for redelivery.

        Needs `ReportBatchItemFailures` on the event source mapping; without it, Lambda redelivers
        the whole batch whenever this returns any failure (still safe: message ids are the keys).
        """

        async def one(record: Mapping[str, Any]) -> str:
            queue = _name(record["eventSourceARN"])
            rule = self.routes.find("sqs", queue)
            if rule is None:
                raise UnroutedEventError(f"no route for SQS queue {queue!r}; add @on_sqs({queue!r}, task=...)")
            return await self._trigger(rule, record, _key("sqs", record["messageId"]), f"sqs:{queue}")

        records = event["Records"]
        results = await asyncio.gather(*(one(record) for record in records), return_exceptions=True)
        failures = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                log.error("SQS message %s was not triggered: %s", record.get("messageId"), result)
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    async def _records(self, kind: str, event: Mapping[str, Any]) -> dict[str, Any]:
        async def one(record: Mapping[str, Any]) -> str:
            if kind == "s3":
                bucket, obj = record["s3"]["bucket"]["name"], record["s3"]["object"]
                source, key = bucket, _key("s3", bucket, obj["key"], obj.get("sequencer") or obj.get("eTag"))
            else:
                source, key = _name(record["Sns"]["TopicArn"]), _key("sns", record["Sns"]["MessageId"])
            rule = self.routes.find(kind, source)
            if rule is None:
                raise UnroutedEventError(f"no route for {kind} source {source!r}; add @on_{kind}({source!r}, task=...)")
            return await self._trigger(rule, record, key, f"{kind}:{source}")

        return await self._all(kind, [one(record) for record in event["Records"]])

    async def _eventbridge(self, kind: str, event: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "schedule":
            found = [(name, self.routes.find("schedule", name)) for name in map(_name, event.get("resources", []))]
        else:
            found = [(event["source"], self.routes.find("eventbridge", event["source"], event["detail-type"]))]
        rules = [(name, rule) for name, rule in found if rule is not None]
        if not rules:
            names = ", ".join(name for name, _ in found) or "(none)"
            raise UnroutedEventError(f"no route for {kind} event from {names}")
        return await self._all(kind, [self._trigger(rule, event, _key(kind, event["id"], name), f"{kind}:{name}")
                                      for name, rule in rules])

    async def _all(self, kind: str, triggers: list[Any]) -> dict[str, Any]:
        results = await asyncio.gather(*triggers, return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise EventTriggerError(f"{len(errors)} of {len(results)} {kind} record(s) not triggered: {errors[0]}")
        return {"runs": results}


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
    SQS, S3, SNS and EventBridge events to tasks (default: the rules made with `@on_sqs` & co.).
    """
    return LambdaHandler(app, routes=routes, endpoints=endpoints)
