"""A FastAPI app and event routes behind one Lambda function: `handler.handler` is its entry point.

Set OUTLAST_API_URL and OUTLAST_SECRET_KEY on the function; OUTLAST_OFFLOAD_BUCKET (and S3
permissions) lets payloads over 256 KiB travel through S3. Queue, bucket, topic and rule names
below are the AWS resources' names.
"""

import json
from typing import Annotated

from fastapi import Depends, FastAPI
from tasks import ingest, invoice_paid, make_thumbnail, nightly_cleanup, page_oncall, process_order

from outlast.adapters.aws_lambda import on_eventbridge, on_s3, on_schedule, on_sns, on_sqs, outlast_lambda_handler
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


on_s3("uploads", task=make_thumbnail)  # payload: bucket, key, size, etag
on_schedule("nightly-cleanup", task=nightly_cleanup)  # an EventBridge schedule rule
on_sns("alerts", task=page_oncall)  # payload: the message, JSON-decoded
on_eventbridge("billing", detail_type="InvoicePaid", task=invoice_paid)  # payload: the event's detail

handler = outlast_lambda_handler(app)
