"""Large payloads travel through S3: the trigger carries a reference, the task process fetches the payload.

Lambda caps invocation and async payloads (256 KB for SQS, SNS and async invokes, 6 MB for
sync), and the runtime has its own inline limit; above a threshold an adapter stores the JSON
in S3 and triggers with `{"$outlast_offload": {"bucket", "key", "bytes", "sha256"}}`. The task
process sees that shape and hands the task the real payload. boto3 is imported only when a
reference is seen or written, so apps that never offload need not install it. S3 credentials and
endpoint come from boto3's usual sources (`AWS_*` variables, instance roles); the objects stay
until a bucket lifecycle rule removes them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

__all__ = ["REFERENCE_KEY", "Offloader", "is_reference", "resolve_payload"]

REFERENCE_KEY = "$outlast_offload"
DEFAULT_THRESHOLD = 256 * 1024  # Lambda's async-invoke, SQS and SNS payload limit


class OffloadError(Exception):
    """An offloaded payload could not be fetched or does not match its reference."""


def is_reference(payload: Any) -> bool:
    return isinstance(payload, dict) and len(payload) == 1 and isinstance(payload.get(REFERENCE_KEY), dict)


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


def resolve_payload(payload: Any) -> Any:
    """The payload itself; an offload reference is replaced by the JSON it points to."""
    if not is_reference(payload):
        return payload
    ref = payload[REFERENCE_KEY]
    body = _s3().get_object(Bucket=ref["bucket"], Key=ref["key"])["Body"].read()
    if hashlib.sha256(body).hexdigest() != ref.get("sha256"):
        raise OffloadError(f"s3://{ref['bucket']}/{ref['key']} does not match the payload it was stored as")
    return json.loads(body)


class Offloader:
    """Stores payloads over `threshold` bytes of JSON in `bucket` and returns a reference instead."""

    def __init__(self, bucket: str, *, threshold: int = DEFAULT_THRESHOLD, prefix: str = "outlast-payloads/",
                 s3: Any = None) -> None:
        self.bucket = bucket
        self.threshold = threshold
        self.prefix = prefix
        self._s3 = s3

    def offload(self, payload: Any) -> Any:
        """`payload`, or a reference to its copy in S3 when its JSON is over the threshold."""
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        if len(body) <= self.threshold:
            return payload
        if self._s3 is None:
            self._s3 = _s3()
        key = f"{self.prefix}{uuid.uuid4().hex}.json"
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return {REFERENCE_KEY: {"bucket": self.bucket, "key": key, "bytes": len(body),
                                "sha256": hashlib.sha256(body).hexdigest()}}
