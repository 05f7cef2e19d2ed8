"""A Supabase database webhook event: its shape, checked, and the idempotency key of one delivery.

Supabase database webhooks (and the triggers `outlast supabase setup` creates) send
`{type, table, schema, record, old_record}` after the transaction commits. outlast's triggers add
`commit_timestamp` (the transaction's timestamp, the same on every delivery of the event),
`transaction_id` and `primary_key` (the table's primary key columns), so a repeated delivery maps
to the same idempotency key and never starts a second run.

A webhook made in the Supabase dashboard (`supabase_functions.http_request`) sends none of these:
nothing in its delivery tells a repeat from the same row changing to the same values again. Its
events are keyed by their content for `REPEAT_WINDOW` seconds only, long enough to absorb a
delivery repeated by the network, short enough that a row going shipped -> paid -> shipped
starts a run for each "shipped".
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from outlast._errors import InvalidRequestError

__all__ = ["REPEAT_WINDOW", "EventShapeError", "SupabaseEvent", "parse_event"]

REPEAT_WINDOW = 10.0  # seconds in which an identical dashboard-webhook delivery counts as a repeat
EventType = Literal["INSERT", "UPDATE", "DELETE"]


class EventShapeError(InvalidRequestError):
    """A delivery that is not a database webhook event; `.field` names the part at fault."""


class SupabaseEvent(BaseModel):
    """One row change. `schema_name` is the payload's `schema` (a reserved name in pydantic)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)

    type: EventType
    table: str = Field(min_length=1)
    schema_name: str = Field("public", alias="schema", min_length=1)
    record: dict[str, Any] | None = None
    old_record: dict[str, Any] | None = None
    commit_timestamp: str | None = None
    transaction_id: str | None = None
    primary_key: list[str] | None = None

    @model_validator(mode="after")
    def _rows_present(self) -> SupabaseEvent:
        if self.type in ("INSERT", "UPDATE") and self.record is None:
            raise ValueError(f"record: an {self.type} event needs the new row in 'record'")
        if self.type == "DELETE" and self.old_record is None:
            raise ValueError("old_record: a DELETE event needs the deleted row in 'old_record'")
        return self

    @property
    def qualified_table(self) -> str:
        return f"{self.schema_name}.{self.table}"

    @property
    def row(self) -> dict[str, Any]:
        """The row the event is about: the new one, or the deleted one for DELETE."""
        row = self.old_record if self.type == "DELETE" else self.record
        assert row is not None
        return row

    def payload(self) -> dict[str, Any]:
        """What a routed task receives by default: the event as Supabase sent it."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def identifies_its_commit(self) -> bool:
        """Whether the event names its transaction (outlast's triggers), so its key holds for good."""
        return bool(self.commit_timestamp)

    def idempotency_key(self, primary_key: tuple[str, ...] = ("id",)) -> str:
        """`supabase:{schema.table}:{type}:` and a digest of the row's primary key and the commit.

        The primary key columns come from the event (outlast's triggers send them) or else from
        `primary_key`. An event without `commit_timestamp` (a webhook made in the Supabase dashboard)
        is identified by its whole content instead, which a repeated delivery repeats exactly; such
        a key is only meant to hold for `REPEAT_WINDOW` (see `Route.item`).
        """
        columns = tuple(self.primary_key or primary_key)
        missing = [column for column in columns if column not in self.row]
        if missing:
            where = "old_record" if self.type == "DELETE" else "record"
            raise EventShapeError(
                f"{where} has no primary key column {missing[0]!r} of {self.qualified_table}; "
                "declare the route's primary_key=", field=f"{where}.{missing[0]}")
        if self.commit_timestamp:
            identity: Any = [[self.row[c] for c in columns], self.commit_timestamp, self.transaction_id]
        else:
            identity = [[self.row[c] for c in columns], self.record, self.old_record]
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]
        return f"supabase:{self.qualified_table}:{self.type}:{digest}"


def parse_event(data: Any) -> SupabaseEvent:
    """A `SupabaseEvent` from a decoded JSON body, or `EventShapeError` naming what is wrong."""
    if not isinstance(data, dict):
        raise EventShapeError(f"the body must be a JSON object, got {type(data).__name__}", field="body")
    if isinstance(data.get("type"), str):
        data = {**data, "type": data["type"].upper()}
    try:
        return SupabaseEvent.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if not field and ":" in message:  # the row checks name their field first
            field = message.split(":", 1)[0]
        raise EventShapeError(f"not a database webhook event: {field or 'body'}: {message}",
                              field=field or "body") from None
