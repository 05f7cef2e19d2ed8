"""The Celery reference: the same two tasks as bench/project/tasks.py, on a local Redis.

Started by the benchmark as `celery -A bench.celery_app worker --pool prefork -c 2` (from the repository
root). Celery's defaults are kept (prefetch multiplier 4, early acks), except that results are ignored:
the benchmark counts completions with one Redis round trip per task instead (see `noop`).
"""

from __future__ import annotations

import os
import socket
import time

import redis
from celery import Celery
from celery.signals import worker_ready

BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15")
DONE_KEY = "bench:done"  # number of tasks finished since the benchmark last reset it
DONE_AT_KEY = "bench:done_at"  # time.time() at which the latest of them finished
READY_KEY = "bench:worker_ready"

app = Celery("bench", broker=BROKER_URL)
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_redis = redis.Redis.from_url(BROKER_URL)  # redis-py opens new connections after a fork
_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _done() -> None:
    """Count one finished task and stamp the time, in one round trip.

    This is the completion signal throughput is measured with: lighter than a result backend
    (which would store a result per task and need the client to fetch each one).
    """
    pipe = _redis.pipeline(transaction=False)
    pipe.incr(DONE_KEY)
    pipe.set(DONE_AT_KEY, repr(time.time()))
    pipe.execute()


@app.task(name="noop")
def noop() -> None:
    _done()


@app.task(name="stamp")
def stamp(payload: dict) -> float:
    """Send the start time to the benchmark's UDP port at once (same mechanism as the outlast task)."""
    started = time.time()
    if payload.get("udp_port"):
        _udp.sendto(f"{payload['sample']} {started!r}".encode(), ("127.0.0.1", payload["udp_port"]))
    _done()
    return started


@worker_ready.connect
def _announce_ready(**_kwargs: object) -> None:
    _redis.set(READY_KEY, os.getpid())
