"""The control socket: each task process connects to it, says who it is, then sends frames that
are demultiplexed here (results, logs, metadata, wait calls, suspension acks, heartbeats)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from outlast._framing import read_frame
from outlast.wire import Call, Heartbeat, Hello, Log, Metadata, Result, Resumed, Suspended, to_supervisor

from .background import Background
from .calls import WaitCalls
from .pool import ProcessPool
from .processes import TaskProcess, describe_exit
from .reports import ReportBuffer

EXIT_STATUS_SECONDS = 2.0


class ControlSocket:
    """The Unix socket task processes connect to; one connection per process (again after a restore)."""

    def __init__(self, path: Path, pool: ProcessPool, reports: ReportBuffer, calls: WaitCalls,
                 background: Background) -> None:
        self.path = path
        self.pool, self.reports, self.calls, self.background = pool, reports, calls, background
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._on_connection, path=str(self.path))

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await read_frame(reader, to_supervisor)
        process = await self.pool.lookup(first.process_id) if isinstance(first, Hello | Resumed) else None
        if process is None or (isinstance(first, Resumed) and process.resumed is None):
            writer.close()
            return
        process.writer = writer
        if isinstance(first, Hello):
            process.hello = first
            if not process.ready.done():
                process.ready.set_result(first)
        elif not process.resumed.done():
            process.resumed.set_result(first)
        while (message := await read_frame(reader, to_supervisor)) is not None:
            process.last_seen = time.monotonic()
            self._dispatch(process, message)
        writer.close()
        if process.suspended is not None:
            return  # it closed the connection to be checkpointed
        with contextlib.suppress(TimeoutError):  # wait for the exit status: it says why (signal, code)
            await asyncio.wait_for(process.popen.wait(), EXIT_STATUS_SECONDS)
        process.gone(describe_exit(process.popen.returncode))

    def _dispatch(self, process: TaskProcess, message: object) -> None:
        if isinstance(message, Result):
            if process.result is not None and not process.result.done():
                process.result.set_result(message)
        elif isinstance(message, Log):
            self.reports.log(message.record)
        elif isinstance(message, Metadata):
            self.reports.metadata(message.update)
        elif isinstance(message, Call):
            self.background.start(self.calls.answer(process, message))
        elif isinstance(message, Suspended):
            if process.suspended is not None and not process.suspended.done():
                process.suspended.set_result(message)
        elif isinstance(message, Heartbeat):
            pass  # last_seen is all it is for
