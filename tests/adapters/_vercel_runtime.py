"""A Vercel Python function served by Vercel's own bridge (PyPI `vercel-runtime`), as the platform starts it.

Vercel's build writes a trampoline that sets `__VC_HANDLER_MODULE_NAME` (`api.index`),
`__VC_HANDLER_ENTRYPOINT` (`api/index.py`), its absolute path and `__VC_HANDLER_VARIABLE_NAME`
(`app`), then imports `vercel_runtime.vc_init`. With `VERCEL_IPC_PATH` naming a Unix socket the
bridge imports the entry point, serves its ASGI app with its vendored uvicorn on 127.0.0.1, and
announces `{"type": "server-started", "payload": {"httpPort": ...}}` on the socket (messages are
JSON, each ended by a NUL byte). The platform then forwards each request over HTTP with its
`x-vercel-internal-*` headers, and the bridge reports `handler-started` and `end` per request.
`VercelFunction` plays the platform's part of that exchange.

vercel-runtime needs Python 3.12 or newer and the project's virtualenv is 3.11, so the function
gets a virtualenv of its own (`function_venv`): vercel-runtime plus this checkout's
`outlast[fastapi]`, which is what Vercel installs from the example's requirements.txt.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.conftest import ROOT

VERCEL_RUNTIME = "vercel-runtime==0.24.1"
PYTHON_ENV = "OUTLAST_TEST_PYTHON312"  # a Python >= 3.12 to run the function with, if not found on its own


def find_python312() -> str | None:
    """A Python >= 3.12 interpreter: $OUTLAST_TEST_PYTHON312, python3.1x on PATH, or a pyenv version."""
    candidates = [os.environ.get(PYTHON_ENV, ""), "python3.12", "python3.13", "python3.14",
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")))]
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue  # not installed (a pyenv shim without that version fails here too)
        if done.returncode == 0 and done.stdout.strip() == "True":
            return candidate
    return None


def function_venv(python: str, where: Path) -> Path:
    """A virtualenv with vercel-runtime and this checkout's outlast[fastapi]; returns its python.

    The test process's own interpreter does, when it is 3.12 or newer and has both (the `test` extra).
    """
    if sys.version_info >= (3, 12) and importlib.util.find_spec("vercel_runtime") is not None:
        return Path(sys.executable)
    subprocess.run([python, "-m", "venv", str(where / "venv")], check=True, capture_output=True, timeout=120)
    venv_python = where / "venv" / "bin" / "python"
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source = where / "outlast"
    for part in ("core", "adapters", "remote-runtime"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    done = subprocess.run([str(venv_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           VERCEL_RUNTIME, f"{source}[fastapi]"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"could not install the function's dependencies:\n{done.stdout}\n{done.stderr}")
    return venv_python


class VercelFunction:
    """`api/index.py` of `project` under vercel_runtime's bridge, reached as the platform reaches it."""

    def __init__(self, python: Path, project: Path, scratch: Path, env: dict[str, str],
                 entrypoint: str = "api/index.py", variable: str = "app") -> None:
        self.python, self.project, self.entrypoint, self.variable = python, project, entrypoint, variable
        self.ipc_path = str(scratch / "ipc.sock")
        self.log_path = scratch / "function.log"
        self.env = env
        self.messages: list[dict] = []
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._started = threading.Event()

    def start(self, timeout: float = 60) -> VercelFunction:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.ipc_path)
        listener.listen(1)
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/tmp"),
               "PYTHONDONTWRITEBYTECODE": "1", **self.env,
               "VERCEL_IPC_PATH": self.ipc_path,
               "__VC_HANDLER_MODULE_NAME": self.entrypoint.removesuffix(".py").replace("/", "."),
               "__VC_HANDLER_ENTRYPOINT": self.entrypoint,
               "__VC_HANDLER_ENTRYPOINT_ABS": str(self.project / self.entrypoint),
               "__VC_HANDLER_VARIABLE_NAME": self.variable}
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen([str(self.python), "-c", "import vercel_runtime.vc_init"],
                                             cwd=self.project, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        threading.Thread(target=self._read_ipc, args=(listener,), daemon=True).start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError(f"the function did not announce server-started:\n{self.log()}")
        return self

    def _read_ipc(self, listener: socket.socket) -> None:
        listener.settimeout(60)
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        buffer = b""
        with connection:
            while chunk := connection.recv(65536):
                buffer += chunk
                *complete, buffer = buffer.split(b"\0")
                for raw in complete:
                    message = json.loads(raw)
                    self.messages.append(message)
                    if message["type"] == "server-started":
                        self.port = message["payload"]["httpPort"]
                        self._started.set()
        listener.close()

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One invocation: the platform's internal headers, as its proxy adds them, then the request; returns
        once the bridge has reported the invocation's start and end, as the platform waits for them."""
        assert self.port is not None
        invocation = uuid.uuid4().hex
        headers = {"host": "outlast-example.vercel.app", "x-forwarded-proto": "https",
                   "x-vercel-internal-invocation-id": invocation, "x-vercel-internal-request-id": "1",
                   **kwargs.pop("headers", {})}
        response = httpx.request(method, f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=30,
                                 **kwargs)
        deadline = time.monotonic() + 10
        while self._reported(invocation) != ["handler-started", "end"]:
            if time.monotonic() > deadline:
                raise AssertionError(f"the bridge did not report invocation {invocation}: {self.messages}")
            time.sleep(0.05)
        return response

    def _reported(self, invocation: str) -> list[str]:
        return [m["type"] for m in list(self.messages)
                if (m.get("payload") or {}).get("context", {}).get("invocationId") == invocation
                and m["type"] in ("handler-started", "end")]

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


__all__ = ["VERCEL_RUNTIME", "VercelFunction", "find_python312", "function_venv"]
