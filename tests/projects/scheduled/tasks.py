"""Tasks of the schedule tests: one declared with a schedule, one that imperative schedules fire."""

from __future__ import annotations

from outlast import schedules, task


@schedules.task(id="heartbeat", cron="* * * * * *", timezone="Europe/Paris")
def heartbeat(payload: schedules.ScheduledPayload, ctx) -> dict:
    # The payload arrives parsed: aware datetimes, the zone, the schedule's id.
    return {"timestamp": payload.timestamp.isoformat(), "timezone": payload.timezone,
            "schedule_id": payload.schedule_id, "upcoming": len(payload.upcoming), "type": payload.type.value}


@task(id="tenant-sync")
def tenant_sync(payload: dict, ctx) -> dict:
    return {"tenant": payload["external_id"], "tick": payload["timestamp"]}
