"""Outlast for AWS Lambda: `handler = outlast_lambda_handler(app)` serves HTTP through Mangum and
turns SQS, S3, SNS, DynamoDB Streams, Kinesis and EventBridge events (rules and Scheduler) into
task runs (`@on_sqs("queue", task=...)` and friends)."""

from ._events import event_kind
from ._handler import EventTriggerError, LambdaHandler, UnroutedEventError, outlast_lambda_handler
from ._routes import (
    EventRoutes,
    Rule,
    on_dynamodb,
    on_eventbridge,
    on_kinesis,
    on_s3,
    on_schedule,
    on_sns,
    on_sqs,
    routes,
)

__all__ = [
    "EventRoutes",
    "EventTriggerError",
    "LambdaHandler",
    "Rule",
    "UnroutedEventError",
    "event_kind",
    "on_dynamodb",
    "on_eventbridge",
    "on_kinesis",
    "on_s3",
    "on_schedule",
    "on_sns",
    "on_sqs",
    "outlast_lambda_handler",
    "routes",
]
