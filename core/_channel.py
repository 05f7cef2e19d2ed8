"""The task process's side of the control channel to its supervisor, and how it survives a checkpoint.

One reader thread owns the socket's receiving side: it hands attempts to the main thread,
answers calls, resolves waitpoints, and carries out a suspend. To be checkpointed the process
closes its connection (CRIU cannot dump a live Unix socket to the supervisor), then sleeps in
`sigwait` for SIGUSR1. Whoever restores it writes `resume.json` (where the supervisor listens
now) into the process's resume directory and sends SIGUSR1; the reader reconnects, says which
waitpoints it still waits for, and re-sends the calls that were never answered. Frames sent
while disconnected wait in a buffer; heartbeats are dropped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from . import _checkpoint_files
from ._framing import FrameSocket
from .wire import (
    Call,
    Heartbeat,
    Log,
    LogRecord,
    Metadata,
    MetadataUpdate,
    Reply,
    Resolved,
    Resumed,
    Shutdown,
    StartAttempt,
    Suspend,
    Suspended,
    WaitpointResult,
    to_task_process,
)

RESUME_SIGNAL = signal.SIGUSR1
RESUME_FILE = "resume.json"


def connect(path: str) -> FrameSocket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return FrameSocket(sock)


class ControlChannel:
    def __init__(self, frames: FrameSocket, process_id: str, resume_dir: str | None,
                 on_supervisor_lost: Callable[[], None]) -> None:
        self.process_id = process_id
        self.resume_dir = Path(resume_dir) if resume_dir else None
        self.inbox: queue.Queue[StartAttempt | Shutdown | None] = queue.Queue()
        self.run_id: str | None = None  # the attempt running now, if any
        self.restores = 0  # how often this process was restored from a checkpoint (its resume hooks use it)
        self._frames: FrameSocket | None = frames
        self._lock = threading.Lock()  # guards the connection, the buffer and the pending maps
        self._buffer: list[BaseModel] = []
        self._calls: dict[int, tuple[Call, concurrent.futures.Future[Reply]]] = {}
        self._waiting: dict[str, concurrent.futures.Future[WaitpointResult]] = {}
        self._call_ids = itertools.count(1)
        self._on_supervisor_lost = on_supervisor_lost
        self._reader = threading.Thread(target=self._read_loop, name="outlast-control", daemon=True)

    def start(self) -> None:
        self._reader.start()

    # --- sending ----------------------------------------------------------------------------

    def send(self, message: BaseModel) -> None:
        """Send now, or once reconnected if the process is suspended (heartbeats are dropped then)."""
        with self._lock:
            if self._frames is None:
                if not isinstance(message, Heartbeat):
                    self._buffer.append(message)
                return
            self._frames.send(message)

    def send_log(self, record: LogRecord) -> None:
        self.send(Log(record=record))

    def send_metadata(self, update: MetadataUpdate) -> None:
        self.send(Metadata(update=update))

    def call(self, **fields: Any) -> concurrent.futures.Future[Reply]:
        """Ask the supervisor something (a wait, a token); the future holds its reply."""
        future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
        with self._lock:
            message = Call(call_id=next(self._call_ids), **fields)
            self._calls[message.call_id] = (message, future)
        self.send(message)
        return future

    def waitpoint(self, waitpoint_id: str) -> concurrent.futures.Future[WaitpointResult]:
        """A future completed when the supervisor says this (pending) waitpoint is complete."""
        with self._lock:
            future = self._waiting.get(waitpoint_id)
            if future is None:
                future = self._waiting[waitpoint_id] = concurrent.futures.Future()
            return future

    # --- receiving --------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            frames = self._frames
            try:
                message = frames.recv(to_task_process) if frames is not None else None
            except OSError:  # reset by a supervisor that was killed: as lost as a closed connection
                message = None
            if message is None:
                if self.run_id is not None:
                    self._on_supervisor_lost()  # the runtime retries the run elsewhere
                self.inbox.put(None)
                return
            if isinstance(message, Reply):
                with self._lock:
                    _, future = self._calls.pop(message.call_id, (None, None))
                    for state in message.waitpoints:  # before any Resolved for them can arrive
                        if state.result is None:
                            self._waiting.setdefault(state.id, concurrent.futures.Future())
                if future is not None:
                    future.set_result(message)
            elif isinstance(message, Resolved):
                self._resolve(message.results)
            elif isinstance(message, Suspend):
                self._suspend_until_restored()
            else:
                self.inbox.put(message)

    def _resolve(self, results: list[WaitpointResult]) -> None:
        with self._lock:  # resolved futures stay until the attempt ends: a waiter may come late for them
            futures = [(self._waiting.get(r.id), r) for r in results]
        for future, result in futures:
            if future is not None and not future.done():
                future.set_result(result)

    def end_attempt(self) -> None:
        with self._lock:
            self._waiting.clear()
            self._calls.clear()

    # --- checkpoint ---------------------------------------------------------------------------

    def _suspend_until_restored(self) -> None:
        with self._lock:
            frames, self._frames = self._frames, None
            if frames is None:
                return
            aside = _checkpoint_files.set_aside()  # files others may grow meanwhile: reopened after
            workdir = self._enter_own_directory()
            with contextlib.suppress(OSError):
                frames.send(Suspended(run_id=self.run_id or ""))
            frames.close()
        # ... the supervisor checkpoints the process here; it may wake up on another machine ...
        while True:
            signal.sigwait({RESUME_SIGNAL})
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._reconnect()
                self.restores += 1
                _checkpoint_files.reopen(aside)
                if workdir is not None:
                    with contextlib.suppress(OSError):
                        os.chdir(workdir)
                return

    def _enter_own_directory(self) -> str | None:
        """Sit in this process's own directory while it is dumped; returns the directory to go back to.
        criu's parasite, run inside a PID namespace's init, mounts a /proc of its own at the relative
        path `proc.crtools` in the process's cwd: processes sharing a cwd (all of a project's) collide
        there when dumped at once ("Can't create a directory (-17)")."""
        if self.resume_dir is None:
            return None
        try:
            workdir = os.getcwd()
            os.chdir(self.resume_dir)
        except OSError:
            return None
        return workdir

    def _reconnect(self) -> None:
        assert self.resume_dir is not None
        where = json.loads((self.resume_dir / RESUME_FILE).read_text())
        frames = connect(where["socket"])
        with self._lock:
            waiting = [key for key, future in self._waiting.items() if not future.done()]
            frames.send(Resumed(process_id=self.process_id, pid=os.getpid(), run_id=self.run_id or "",
                                waiting=waiting))
            # Calls the old supervisor never answered go again: the runtime treats them idempotently.
            for message, _ in self._calls.values():
                frames.send(message)
            for message in self._buffer:
                frames.send(message)
            self._buffer.clear()
            self._frames = frames


class HeartbeatThread(threading.Thread):
    def __init__(self, channel: ControlChannel, interval: float) -> None:
        super().__init__(name="outlast-heartbeat", daemon=True)
        self.channel = channel
        self.interval = interval

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            run_id = self.channel.run_id
            if run_id is not None:
                with contextlib.suppress(OSError):  # a lost supervisor is noticed by the reader
                    self.channel.send(Heartbeat(run_id=run_id))
