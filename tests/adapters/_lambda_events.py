"""Lambda event shapes as AWS delivers them (field for field, per the AWS Lambda developer guide)."""

from __future__ import annotations

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
