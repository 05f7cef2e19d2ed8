"""Tasks of the Vercel example. They run on the outlast runtime, never inside the Vercel function:
`outlast deploy --vercel` (the build command in vercel.json) ships them with each Vercel deployment."""

from pydantic import BaseModel

from outlast import logger, metadata, schema_task, wait


class Report(BaseModel):
    account_id: int
    email: str


@schema_task(id="vercel-monthly-report", schema=Report, retry={"max_attempts": 3})
async def monthly_report(report: Report, ctx) -> dict:
    logger.info("building report", account=report.account_id, version=ctx.version)
    metadata.set("step", "collecting")
    await wait.for_(seconds=1)  # hours would do as well: this runs on the runtime, not in a function
    metadata.set("step", "sent")
    return {"account": report.account_id, "sent_to": report.email, "built_by": ctx.version}
