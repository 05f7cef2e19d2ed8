"""The task side of the control channel ends cleanly however the supervisor goes away."""

from __future__ import annotations

import socket
import threading

import pytest

from outlast._channel import ControlChannel
from outlast._framing import FrameSocket
from outlast.wire import Log, LogRecord


def _channel(sock: socket.socket, lost: threading.Event) -> ControlChannel:
    return ControlChannel(FrameSocket(sock), "p-test", None, on_supervisor_lost=lost.set)


@pytest.mark.parametrize("unread", [False, True], ids=["closed", "reset"])
def test_an_idle_process_stops_when_its_supervisor_goes(unread: bool) -> None:
    ours, theirs = socket.socketpair()
    lost = threading.Event()
    channel = _channel(ours, lost)
    channel.start()
    if unread:  # a killed supervisor leaves what it never read: the kernel then resets the connection
        channel.send(Log(record=LogRecord(run_id="r", attempt=1, message="x", time="2026-11-27T00:00:00Z")))
    theirs.close()
    assert channel.inbox.get(timeout=10) is None, "the main thread is told to stop serving"
    assert not lost.is_set(), "no attempt was running"


def test_a_process_mid_attempt_treats_a_reset_as_a_lost_supervisor() -> None:
    ours, theirs = socket.socketpair()
    lost = threading.Event()
    channel = _channel(ours, lost)
    channel.run_id = "run_1"
    channel.start()
    channel.send(Log(record=LogRecord(run_id="run_1", attempt=1, message="x", time="2026-11-27T00:00:00Z")))
    theirs.close()
    assert lost.wait(10), "the attempt is stopped: the runtime retries it elsewhere"
