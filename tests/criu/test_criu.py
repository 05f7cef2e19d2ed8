"""Real CRIU checkpoint/restore of a task process (no mocks). CI machines have criu installed by
scripts/install-criu.sh; if check() says it is unavailable, these tests fail with the reason."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outlast.runtime.checkpoint import CheckpointError, check, dump, restore
from outlast.runtime.checkpoint.criu import MANIFEST
from outlast.runtime.checkpoint.doctor import report
from outlast.runtime.worker.pidns import set_child_subreaper, spawn_in_pid_namespace

TASK = Path(__file__).with_name("task_with_state.py")


@pytest.fixture(autouse=True)
def subreaper() -> Iterator[None]:
    """spawn/restore make this process a child subreaper; undo that for the other tests."""
    previous = set_child_subreaper(True)
    yield
    set_child_subreaper(previous)


def require_criu() -> None:
    """Fail (not skip): CI runs on machines where scripts/install-criu.sh makes criu work."""
    status = check()
    if not status.available:
        pytest.fail(f"CRIU is not usable here: {status.reason}")


class LineServer:
    """TCP server on 127.0.0.1 that records the lines received on each connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections: list[list[str]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            lines: list[str] = []
            self.connections.append(lines)
            threading.Thread(target=self._read, args=(conn, lines), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, lines: list[str]) -> None:
        with conn, conn.makefile("r") as stream, contextlib.suppress(OSError):
            for line in stream:
                lines.append(line.strip())

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def ticks(log: Path) -> list[int]:
    return [int(m[1]) for m in re.finditer(r"^tick (\d+)$", log.read_text(), re.M)]


def nspid(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(p) for p in line.split()[1:]]
    raise AssertionError("no NSpid line")


def _points_to(fd: Path, target: Path) -> bool:
    try:
        return os.readlink(fd) == str(target)
    except OSError:
        return False


def kill(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def test_check_reports_available() -> None:
    status = check()
    assert status.available, f"CRIU is not usable here: {status.reason}"
    assert status.version is not None
    assert tuple(int(x) for x in status.version.split(".")[:2]) >= (4, 2)
    assert status.reason == ""


def test_dump_and_restore_keep_state(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    require_criu()
    server = LineServer()
    log = tmp_path / "task.log"
    pid = restored = None
    try:
        pid = spawn_in_pid_namespace([sys.executable, str(TASK), str(server.port)], dict(os.environ), tmp_path, log)
        assert nspid(pid) == [pid, 1], "the task is PID 1 of its own namespace"
        wait_for(lambda: len(ticks(log)) >= 10, "the task to tick")
        start = re.search(r"^start pid=1 (big=\w+ tmp=\w+)$", log.read_text(), re.M)
        assert start, log.read_text()

        result = dump(pid, tmp_path / "images")
        assert not Path(f"/proc/{pid}").exists(), "dumped task is gone (and reaped)"
        before = ticks(log)
        time.sleep(0.3)
        assert ticks(log) == before, "nothing ticks while the task is on disk"
        wait_for(lambda: len(server.connections) == 1 and server.connections[0] and
                 not Path(f"/proc/{pid}").exists(), "the first connection")

        began = time.perf_counter()
        restored = restore(tmp_path / "images", pidfile=tmp_path / "restored.pid")
        restore_seconds = time.perf_counter() - began
        assert restored != pid
        assert nspid(restored) == [restored, 1], "inner PID stays 1"
        assert int((tmp_path / "restored.pid").read_text()) == restored
        wait_for(lambda: len(ticks(log)) >= len(before) + 10, "ticks after the restore")
        os.kill(restored, signal.SIGUSR1)
        verify = wait_for(lambda: re.search(r"^verify pid=(\d+) counter=(\d+) (big=\w+ tmp=\w+)$",
                                            log.read_text(), re.M), "the state check")
        assert verify[1] == "1"
        assert verify[3] == start[1], "50 MB bytearray and temp file content survived"
        after = ticks(log)
        assert after == list(range(1, len(after) + 1)), "the counter went on without a gap or a repeat"
        assert "reconnect after" in log.read_text()
        wait_for(lambda: len(server.connections) == 2 and server.connections[1], "the reconnection")
        first, second = server.connections
        assert int(second[0].split()[1]) == int(first[-1].split()[1]) + 1, (first[-3:], second[:3])

        with capsys.disabled():
            print(f"\n  criu dump {result.seconds * 1000:.0f} ms, restore {restore_seconds * 1000:.0f} ms, "
                  f"image {result.image_bytes / 1e6:.1f} MB (50 MB bytearray held)")
    finally:
        kill(pid)
        kill(restored)
        server.close()


def test_restore_of_corrupt_images_fails_with_the_reason(tmp_path: Path) -> None:
    require_criu()
    pid = spawn_in_pid_namespace([sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"],
                                 dict(os.environ), tmp_path, tmp_path / "task.log")
    try:
        dump(pid, tmp_path / "images")
    finally:
        kill(pid)
    images = tmp_path / "images"

    # A truncated pages image (criu 4.2.1 itself would hang on it): caught by the manifest.
    truncated = tmp_path / "truncated"
    shutil.copytree(images, truncated)
    (pages,) = truncated.glob("pages-*.img")
    os.truncate(pages, pages.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=rf"{pages.name} .* truncated or corrupt"):
        restore(truncated, pidfile=tmp_path / "pid")

    # Without the manifest criu 4.2.1 hangs on it: the timeout kills criu and the half-restored task.
    (truncated / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match=r"criu restore (timed out|failed)"):
        restore(truncated, pidfile=tmp_path / "pid", timeout=2)
    holders = [fd for fd in Path("/proc").glob("[0-9]*/fd/*") if _points_to(fd, pages)]
    assert not holders, f"processes left holding {pages}: {holders}"

    # Garbage where criu's own checks catch it (no manifest to help).
    garbled = tmp_path / "garbled"
    shutil.copytree(images, garbled)
    (garbled / MANIFEST).unlink()
    (garbled / "inventory.img").write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match=r"criu restore failed .*Magic doesn't match for inventory.img"):
        restore(garbled, pidfile=tmp_path / "pid")

    # A missing image file.
    missing = tmp_path / "missing"
    shutil.copytree(images, missing)
    (missing / "core-1.img").unlink()
    with pytest.raises(CheckpointError, match=r"core-1.img is missing"):
        restore(missing, pidfile=tmp_path / "pid")

    with pytest.raises(CheckpointError, match=r"does not exist"):
        restore(tmp_path / "nowhere", pidfile=tmp_path / "pid")
    assert not (tmp_path / "pid").exists()


def test_doctor_reports_every_check_ok() -> None:
    require_criu()
    rows = report()
    assert [name for name, _, _ in rows] == ["os", "criu binary", "privileges", "criu check", "dump + restore"]
    assert all(ok for _, ok, _ in rows), rows
