"""Lambda event shapes as AWS delivers them (field for field, per the AWS Lambda developer guide)."""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote_plus

ACCOUNT = "123456789012"
REGION = "us-east-1"


def context() -> SimpleNamespace:
    return SimpleNamespace(function_name="outlast-example", function_version="$LATEST",
                           aws_request_id=str(uuid.uuid4()), memory_limit_in_mb=512,
                           invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:outlast-example",
                           get_remaining_time_in_millis=lambda: 29_000)


def _now() -> tuple[str, int]:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()), int(time.time() * 1000)


def api_gateway_v1(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict:
    """REST API (payload format 1.0), proxy integration on `/{proxy+}`, stage `prod`."""
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", "User-Agent": "curl/8.5.0",
               "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443", "X-Forwarded-For": "203.0.113.9",
               **({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
    request_time, epoch = _now()
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {
            "resourceId": "a1b2c3", "resourcePath": "/{proxy+}", "httpMethod": method,
            "extendedRequestId": "c6af9ac6-7b61", "requestTime": request_time, "path": f"/prod{path}",
            "accountId": ACCOUNT, "protocol": "HTTP/1.1", "stage": "prod", "domainPrefix": "abc123",
            "requestTimeEpoch": epoch, "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "203.0.113.9", "userAgent": "curl/8.5.0", "accessKey": None,
                         "accountId": None, "caller": None, "user": None, "userArn": None},
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "apiId": "abc123",
        },
        "body": None if body is None else json.dumps(body), "isBase64Encoded": False,
    }


def api_gateway_v2(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, *,
                   function_url: bool = False) -> dict:
    """HTTP API (payload format 2.0); with `function_url`, a Lambda Function URL's event (same format)."""
    domain = ("xyz789abcdefghijklmnopqrst.lambda-url.us-east-1.on.aws" if function_url
              else "api123.execute-api.us-east-1.amazonaws.com")
    headers = {"host": domain, "user-agent": "curl/8.5.0", "x-forwarded-proto": "https",
               "x-forwarded-port": "443", "x-forwarded-for": "203.0.113.9",
               **({"content-type": "application/json"} if body is not None else {}), **(headers or {})}
    request_time, epoch = _now()
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "headers": headers,
        "requestContext": {
            "accountId": "anonymous" if function_url else ACCOUNT, "apiId": domain.split(".")[0],
            "domainName": domain, "domainPrefix": domain.split(".")[0],
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9",
                     "userAgent": "curl/8.5.0"},
            "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
            "time": request_time, "timeEpoch": epoch,
        },
        "body": None if body is None else json.dumps(body), "isBase64Encoded": False,
    }


def sqs_event(queue_arn: str, messages: list[dict]) -> dict:
    """What the SQS event source mapping hands the function for messages it received (boto3 shapes)."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": REGION,
    } for m in messages]}


def s3_event(bucket: str, key: str, size: int, etag: str) -> dict:
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"}, "requestParameters": {"sourceIPAddress": "203.0.113.9"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQ"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "thumbnails",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key), "size": size, "eTag": etag.strip('"'),
                          "sequencer": f"{time.time_ns():X}"}},
    }]}


def scheduled_event(rule: str) -> dict:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION,
            "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"], "detail": {}}


def eventbridge_event(source: str, detail_type: str, detail: dict) -> dict:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
            "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION,
            "resources": [], "detail": detail}


def sns_event(topic: str, message: Any, subject: str | None = None) -> dict:
    arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:{topic}"
    return {"Records": [{
        "EventVersion": "1.0", "EventSource": "aws:sns",
        "EventSubscriptionArn": f"{arn}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
        "Sns": {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": arn, "Subject": subject,
                "Message": json.dumps(message), "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "SignatureVersion": "1", "Signature": "EXAMPLEpH+..", "SigningCertUrl": "https://sns.example/cert.pem",
                "UnsubscribeUrl": "https://sns.example/unsubscribe", "MessageAttributes": {}},
    }]}


def _iso(ms: bool = False) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z" if ms else "%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def scheduler_event(name: str, group: str = "default") -> dict:
    """EventBridge Scheduler invoking the function (templated Lambda target): the schedule's ARN in `resources`,
    `detail` the string "{}" as Scheduler sends it."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.scheduler",
            "account": ACCOUNT, "time": _iso(), "region": REGION,
            "resources": [f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/{group}/{name}"], "detail": "{}"}


def s3_removed_event(bucket: str, key: str, *, marker: bool = False) -> dict:
    """An `s3:ObjectRemoved:*` notification: no size or eTag, a delete marker's versionId when versioned."""
    event = s3_event(bucket, key, 0, "")
    record = event["Records"][0]
    record["eventName"] = "ObjectRemoved:DeleteMarkerCreated" if marker else "ObjectRemoved:Delete"
    record["s3"]["object"] = {"key": quote_plus(key), "sequencer": f"{time.time_ns():X}",
                              **({"versionId": "3HL4kqtJvjVBH40Nrjfkd"} if marker else {})}
    return event


def s3_eventbridge_event(bucket: str, key: str, detail_type: str = "Object Created", reason: str = "PutObject",
                         size: int | None = 1024, etag: str = "d41d8cd98f00b204e9800998ecf8427e",
                         deletion_type: str | None = None) -> dict:
    """S3 through EventBridge (the bucket's "Send notifications to EventBridge" on): keys are not URL-encoded."""
    obj: dict[str, Any] = {"key": key, "sequencer": f"{time.time_ns():X}"}
    if size is not None:
        obj.update(size=size, etag=etag)
    detail: dict[str, Any] = {"version": "0", "bucket": {"name": bucket}, "object": obj,
                              "request-id": "N4N7GDK58NMKJ12R", "requester": ACCOUNT,
                              "source-ip-address": "203.0.113.9", "reason": reason}
    if deletion_type:
        detail["deletion-type"] = deletion_type
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": "aws.s3",
            "account": ACCOUNT, "time": _iso(), "region": REGION, "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": detail}


def dynamodb_event(stream_arn: str, records: list[dict]) -> dict:
    """What a DynamoDB stream's event source mapping hands the function for records from GetRecords
    (boto3 shapes: the creation time is a datetime there, epoch seconds in the event)."""
    out = []
    for record in records:
        stream = dict(record["dynamodb"])
        created = stream.get("ApproximateCreationDateTime")
        if created is not None and not isinstance(created, int | float):
            stream["ApproximateCreationDateTime"] = int(created.timestamp())
        out.append({"eventID": record["eventID"], "eventName": record["eventName"],
                    "eventVersion": record.get("eventVersion", "1.1"), "eventSource": "aws:dynamodb",
                    "awsRegion": REGION, "dynamodb": stream, "eventSourceARN": stream_arn})
    return {"Records": out}


def kinesis_event(stream_arn: str, shard_id: str, records: list[dict]) -> dict:
    """What a Kinesis event source mapping hands the function for records from GetRecords (data in base64)."""
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r["PartitionKey"],
                    "sequenceNumber": r["SequenceNumber"], "data": base64.b64encode(r["Data"]).decode(),
                    "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp()},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{shard_id}:{r['SequenceNumber']}",
        "eventName": "aws:kinesis:record", "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/outlast-example",
        "awsRegion": REGION, "eventSourceARN": stream_arn,
    } for r in records]}


def awslogs_event(log_group: str, messages: list[str]) -> dict:
    """A CloudWatch Logs subscription filter delivery: gzip'd JSON, base64, under `awslogs.data`."""
    data = {"messageType": "DATA_MESSAGE", "owner": ACCOUNT, "logGroup": log_group,
            "logStream": "2026/12/02/[$LATEST]0123456789abcdef", "subscriptionFilters": ["outlast"],
            "logEvents": [{"id": str(i), "timestamp": int(time.time() * 1000), "message": m}
                          for i, m in enumerate(messages)]}
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(data).encode())).decode()}}


def cognito_event(trigger: str = "PreSignUp_SignUp") -> dict:
    """A Cognito user pool Lambda trigger (the common part; `request` depends on the trigger)."""
    return {"version": "1", "region": REGION, "userPoolId": f"{REGION}_EXAMPLE", "userName": "ada",
            "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "1example23456789"},
            "triggerSource": trigger, "request": {"userAttributes": {"email": "ada@example.com"}},
            "response": {"autoConfirmUser": False, "autoVerifyEmail": False, "autoVerifyPhone": False}}


def msk_event(topic: str) -> dict:
    """An Amazon MSK batch: records grouped by `topic-partition`, values in base64."""
    return {"eventSource": "aws:kafka",
            "eventSourceArn": f"arn:aws:kafka:{REGION}:{ACCOUNT}:cluster/demo/abcd1234-5678-90ab-cdef-1234567890ab-2",
            "bootstrapServers": "b-1.demo.kafka.us-east-1.amazonaws.com:9092",
            "records": {f"{topic}-0": [{"topic": topic, "partition": 0, "offset": 15, "timestamp": 1545084650987,
                                        "timestampType": "CREATE_TIME", "key": base64.b64encode(b"k").decode(),
                                        "value": base64.b64encode(b'{"a": 1}').decode(), "headers": []}]}}
