"""Tasks of the benchmark: the outlast twins of the Celery tasks in bench/celery_app.py."""

from __future__ import annotations

import socket
import time

from outlast import task

_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@task(id="noop")
def noop(payload):
    return None


@task(id="stamp")
def stamp(payload):
    """Return the time the run started; if the payload names a UDP port, also send it there at once.

    The UDP datagram ("<sample id> <time>") tells the benchmark the start time without it having to
    poll the run, which would load the runtime while it measures latency.
    """
    started = time.time()
    if payload and payload.get("udp_port"):
        _udp.sendto(f"{payload['sample']} {started!r}".encode(), ("127.0.0.1", payload["udp_port"]))
    return started
