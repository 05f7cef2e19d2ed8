"""Worker nodes (`/api/v1/worker/nodes`): what the runtime last saw of a node, and asking it to drain.

Scoped like the rest of the worker API: the environment's secret key sees only nodes that served
that environment. A drain is picked up by the node's next heartbeat (within about a second), after
which the node drains as on SIGTERM (stops claiming, lets attempts end within its grace, hands the
rest over by checkpoint) and exits.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from outlast.wire import API_PREFIX, WorkerNode

from .checked_input import CheckedRoute
from .deps import Env, State

router = APIRouter(prefix=f"{API_PREFIX}/worker/nodes", tags=["worker"], route_class=CheckedRoute)
NodeId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/{node_id}", response_model=WorkerNode)
def node(node_id: NodeId, env: Env, rt: State) -> WorkerNode:
    seen = rt.engine.nodes.get(env, node_id)
    seen.import_error = rt.engine.registration.import_failure(env, node_id)  # `outlast dev` after a broken save
    return seen


@router.post("/{node_id}/drain", response_model=WorkerNode, status_code=202)
def drain(node_id: NodeId, env: Env, rt: State) -> WorkerNode:
    return rt.engine.nodes.request_drain(env, node_id)
