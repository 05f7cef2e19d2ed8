"""`outlast worker drain [NODE] [--wait]`: ask a worker node to drain, as SIGTERM on it would.

The runtime keeps the request until the node's next heartbeat (about a second); the node then stops
claiming, lets its attempts end within its OUTLAST_DRAIN_GRACE, hands the rest to other nodes by
checkpoint, and exits. With --wait the command returns once the node has taken the request and
holds no attempts.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Annotated
from urllib.parse import quote

import typer
from pydantic import TypeAdapter

from .._client import Client
from ..wire import WorkerNode
from .output import ApiUrl, ClientFactory, Json, SecretKey, client_errors, fail

__all__ = ["register"]

_NODE = TypeAdapter(WorkerNode)
POLL_SECONDS = 0.5


def default_node_id() -> str:
    """The id `outlast worker` gives a node it starts on this machine without --node-id."""
    return os.environ.get("OUTLAST_NODE_ID") or socket.gethostname()


def register(group: typer.Typer, *, client_factory: ClientFactory = Client) -> None:
    """Add `drain` to the `worker` group."""

    @group.command("drain")
    def drain(
        node: Annotated[str | None, typer.Argument(
            metavar="NODE", show_default=False,
            help="The node's id (its --node-id; default: OUTLAST_NODE_ID or this machine's host name).")] = None,
        wait: Annotated[bool, typer.Option("--wait", help="Return once the node holds no attempts.")] = False,
        timeout: Annotated[float, typer.Option(min=0, help="With --wait: give up (exit 1) after this many seconds.")]
        = 600.0,
        api_url: ApiUrl = None, secret_key: SecretKey = None, json: Json = False,
    ) -> None:
        """Drain a worker node of the secret key's environment: it stops claiming, hands its executing
        attempts to other nodes (by checkpoint, after its grace) and exits."""
        node_id = node or default_node_id()
        path = f"/worker/nodes/{quote(node_id, safe='')}"
        with client_errors():
            client = client_factory(api_url=api_url, secret_key=secret_key)
            state = client.execute(client.requests.call("POST", f"{path}/drain", _NODE))
            if not json:
                typer.echo(f"{node_id}: asked to drain ({state.attempts} attempts held)")
            deadline = time.monotonic() + timeout
            while wait and not (state.draining and state.attempts == 0):
                if time.monotonic() > deadline:
                    raise fail(f"{node_id} still holds {state.attempts} attempts after {timeout:g}s"
                               + ("" if state.draining else " (and has not taken the request: is it running?)"), 1)
                time.sleep(POLL_SECONDS)
                state = client.execute(client.requests.call("GET", path, _NODE))
        if json:
            typer.echo(state.model_dump_json(indent=2))
        elif wait:
            typer.echo(f"{node_id}: drained (holds no attempts)")
