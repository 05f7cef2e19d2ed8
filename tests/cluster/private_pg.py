"""A PostgreSQL server of the test's own (initdb in a temporary directory, a free port), so that a
test can restart it for real: the machine's shared server must never be restarted under the others."""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


@dataclass
class PrivatePostgres:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D", str(self.data / "db"), "-w",
                        "-l", str(self.data / "server.log"), *args], check=True, capture_output=True)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data} "
                        "-c fsync=off -c max_connections=60", "start")

    def restart(self) -> None:
        """A fast shutdown (every connection cut) and a start again, as an operator's restart."""
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="outlast-pg-"))  # outside pytest's tmp: the postgres user reaches it
    shutil.chown(root, "postgres", "postgres")
    server = PrivatePostgres(root, free_port())
    subprocess.run(["runuser", "-u", "postgres", "--", _bin("initdb"), "-D", str(root / "db"), "-A", "trust",
                    "-U", "postgres", "--no-sync"], check=True, capture_output=True)
    try:
        server.start()
        yield server
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D", str(root / "db"), "-m",
                        "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
