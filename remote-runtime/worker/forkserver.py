"""The supervisor's side of the fork server (`outlast._zygote`): one per code version.

It imports the project once; every task process of that version is then forked from it in
milliseconds instead of starting a new interpreter. Linux only (it relies on re-parenting to a
child subreaper); elsewhere task processes are started one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from .cgroups import TaskCgroup
from .isolation import Plan
from .pidns import set_child_subreaper


class ForkServerFailed(Exception):
    """The fork server could not import the project, or stopped answering."""


class ForkServer:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.cgroup: TaskCgroup | None = None  # its own, under isolation (see ProcessPool._forkserver_cgroup)
        self._lock = asyncio.Lock()  # one request at a time: replies come back in order

    @classmethod
    async def start(cls, env: Mapping[str, str], cwd: Path, python: str | None = None,
                    isolation: Plan | None = None) -> ForkServer:
        """Start it (inside `isolation`'s namespaces if given) and wait until it imported the project;
        ForkServerFailed says why it could not."""
        set_child_subreaper(True)  # the tasks it forks become our children
        argv = [python or sys.executable, "-m", "outlast._zygote"]
        if isolation is not None:
            argv = isolation.command(argv)
        process = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), cwd=str(cwd),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True)
        server = cls(process)
        first = await server._read()
        if "import_error" in first:
            await server.close()
            raise ForkServerFailed(first["import_error"])
        return server

    async def fork(self, process_id: str, env: Mapping[str, str], output: Path | None, namespace: bool,
                   network: bool = True) -> int:
        """A new task process; returns its host PID (a child of this process once it is running).
        `network` False: in a network namespace of its own, loopback only (True: the fork server's
        choice, loopback only too under OUTLAST_TASK_NETWORK=loopback, so True is never sent)."""
        request = {"process_id": process_id, "env": dict(env), "output": str(output) if output else None,
                   "namespace": namespace}
        if not network:
            request["network"] = False
        async with self._lock:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            await self.process.stdin.drain()
            reply = await self._read()
        if "error" in reply:
            raise ForkServerFailed(f"could not fork a task process: {reply['error']}")
        return int(reply["pid"])

    async def _read(self) -> dict:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            code = await self.process.wait()
            raise ForkServerFailed(f"the fork server exited with code {code}")
        return json.loads(line)

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)


def supported() -> bool:
    return sys.platform == "linux" and hasattr(os, "pidfd_open")
