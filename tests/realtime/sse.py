"""A test's own reading of Server-Sent Events (independent of the SDK's), over a real connection."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx


@dataclass
class Event:
    id: str | None
    event: str
    data: dict

    @property
    def key(self) -> tuple[str | None, str, str]:
        return (self.id, self.event, json.dumps(self.data, sort_keys=True))


def read_events(url: str, *, headers: dict[str, str] | None = None, params: dict | None = None,
                count: int | None = None, until: str | None = "end", timeout: float = 60) -> list[Event]:
    """Events from `url` until `count` of them (then the connection is dropped) or the `until` event."""
    events: list[Event] = []
    fields: dict[str, str] = {}
    data: list[str] = []
    with httpx.stream("GET", url, headers=headers, params=params, timeout=httpx.Timeout(timeout)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                if name == "data":
                    data.append(value.removeprefix(" "))
                else:
                    fields[name] = value.removeprefix(" ")
                continue
            if data:
                events.append(Event(fields.get("id"), fields.get("event", "message"), json.loads("\n".join(data))))
                if (count is not None and len(events) >= count) or events[-1].event == until:
                    return events
            fields, data = {}, []
    return events


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
