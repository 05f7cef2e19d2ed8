"""A FastAPI app and event routes behind one Lambda function: `handler.handler` is its entry point.

Set OUTLAST_API_URL and OUTLAST_SECRET_KEY on the function; OUTLAST_OFFLOAD_BUCKET (and S3
permissions) lets payloads over 256 KiB travel through S3. Queue, bucket, topic and rule names
below are the AWS resources' names.
"""

import json
from typing import Annotated

from fastapi import Depends, FastAPI
from tasks import (
    forget_thumbnail,
    ingest,
    invoice_paid,
    make_thumbnail,
    nightly_cleanup,
    order_changed,
    page_oncall,
    process_order,
    record_click,
)

from outlast.adapters.aws_lambda import (
    on_dynamodb,
    on_eventbridge,
    on_kinesis,
    on_s3,
    on_schedule,
    on_sns,
    on_sqs,
    outlast_lambda_handler,
)
from outlast.adapters.fastapi import Outlast, OutlastClient

app = FastAPI()
outlast = Outlast(app, tasks=[ingest, process_order])


@app.post("/ingest", status_code=202)
async def start_ingest(batch: dict, client: Annotated[OutlastClient, Depends(outlast.client)]) -> dict:
    handle = await client.trigger(ingest, batch)  # returns at once; the runtime runs it, for as long as it takes
    return {"run_id": handle.id}


@on_sqs("orders", task=process_order)  # one run per message, the message id as idempotency key
def order_from_message(record: dict) -> dict:
    return json.loads(record["body"])["order"]


# S3 notifications or S3 events through EventBridge; events in S3's notation (default s3:ObjectCreated:*).
on_s3("uploads", task=make_thumbnail, prefix="photos/")  # payload: bucket, key, size, etag, event
on_s3("uploads", task=forget_thumbnail, events=["s3:ObjectRemoved:*"], prefix="photos/")
on_schedule("nightly-cleanup", task=nightly_cleanup)  # an EventBridge Scheduler schedule or rule of that name
on_dynamodb("orders", task=order_changed)  # a DynamoDB stream of the table: one run per change record
on_kinesis("clicks", task=record_click)  # one run per record, its data JSON-decoded
on_sns("alerts", task=page_oncall)  # payload: the message, JSON-decoded
on_eventbridge("billing", detail_type="InvoicePaid", task=invoice_paid)  # payload: the event's detail

handler = outlast_lambda_handler(app)
