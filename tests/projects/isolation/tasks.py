"""Tasks that look around their sandbox: which files they can read or write, their /tmp, the network,
and a wait across a checkpoint. Used by tests/machines/test_isolation.py."""

from __future__ import annotations

import ctypes
import os
import socket
import tempfile
import urllib.request
from pathlib import Path

from outlast import task, wait

CODE_DIR = Path(__file__).resolve().parent


def attempt(action, path: str) -> str:
    """'ok', or the name of the error the kernel gave (ENOENT, EROFS, EACCES...)."""
    try:
        action(path)
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return "ok"


def read(path: str) -> None:
    with open(path, "rb") as handle:
        handle.read(1)


def write(path: str) -> None:
    """Open for writing without changing a byte (so a failing test leaves the file as it was)."""
    with open(path, "ab"):
        pass


def create(path: str) -> None:
    with open(path, "x"):
        pass
    os.unlink(path)


def sandbox() -> dict:
    """What holds for the process itself, whatever the paths."""
    status = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":\t" in line)
    return {
        "no_new_privs": status.get("NoNewPrivs", "").strip(),
        "seccomp": status.get("Seccomp", "").strip(),
        "capabilities": {key: status[key].strip() for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh")},
        "hostname": socket.gethostname(),
        "cwd": os.getcwd(),
        "tmpdir": tempfile.gettempdir(),
        "write_code": attempt(write, str(CODE_DIR / "tasks.py")),
        "create_in_code": attempt(create, str(CODE_DIR / f".created-by-{os.getpid()}")),
        "write_cwd": attempt(create, "written-here"),
    }


@task(id="probe")
def probe(payload: dict) -> dict:
    return {"read": {p: attempt(read, p) for p in payload.get("read", [])},
            "write": {p: attempt(write, p) for p in payload.get("write", [])},
            **sandbox()}


def mount(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
    libc.umount2(path.encode(), 2)


def read_some(path: str) -> str:
    """'ok: N bytes' for what a read gave (a masked file gives 0), else the error's name."""
    try:
        with open(path, "rb") as handle:
            return f"ok: {len(handle.read(64))} bytes"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__


def unshare_user(_: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER: allowed to anyone by default, and root inside
        raise OSError(ctypes.get_errno(), "unshare")


@task(id="escape")
def escape(payload: dict) -> dict:
    """What a task without privileges must not be able to do; each value 'ok' or the kernel's error."""
    runtime = payload["runtime_pid"]
    return {
        "uid": os.getuid(),
        "mount": attempt(mount, os.getcwd()),
        "user_namespace": attempt(unshare_user, ""),
        "runtime_memory": read_some(f"/proc/{runtime}/mem"),  # ptrace access: what ptrace(ATTACH) checks
        "runtime_environment": read_some(f"/proc/{runtime}/environ"),
        "kcore": read_some("/proc/kcore"),
        "keys": read_some("/proc/keys"),
        "sysctl": attempt(write, "/proc/sys/kernel/hostname"),
        "sysrq": attempt(write, "/proc/sysrq-trigger"),
        "block_device": read_some(payload["block_device"]),
        "null": attempt(write, "/dev/null"),
        "cgroup_escape": attempt(write, payload["cgroup_procs"]),
        "sys": attempt(write, "/sys/kernel/mm/ksm/run"),
        **sandbox(),
    }


@task(id="write-tmp")
def write_tmp(payload: dict) -> dict:
    Path("/tmp", payload["name"]).write_text(payload["text"])
    return {"listing": sorted(os.listdir("/tmp"))}


@task(id="write-file")
def write_file(payload: dict) -> dict:
    Path(payload["path"]).write_text(payload["text"])
    listed = Path(payload["list"])
    return {"listing": sorted(os.listdir(listed)), "data_listing": sorted(os.listdir(listed / "data"))}


@task(id="fetch")
def fetch(payload: dict) -> dict:
    with urllib.request.urlopen(payload["url"], timeout=10) as response:
        return {"status": response.status, "body": response.read().decode()}


@task(id="loopback")
def loopback(payload: dict) -> dict:
    """Its network interfaces, and an echo through 127.0.0.1 within the task."""
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        peer, _ = server.accept()
        with peer:
            client.sendall(b"own loopback")
            echo = peer.recv(64).decode()
    return {"interfaces": sorted(name for _, name in socket.if_nameindex()), "echo": echo}


@task(id="isolated-wait")
async def isolated_wait(payload: dict) -> dict:
    """State in memory and in the private /tmp, a wait (checkpointed), then both again and the sandbox."""
    state = {"counter": 41, "items": list(range(1000))}
    Path("/tmp/state.txt").write_text(payload["text"])
    host_pid = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("NSpid:"))
    Path(tempfile.gettempdir(), "pid").write_text(str(host_pid))
    await wait.for_(seconds=payload.get("seconds", 4))
    state["counter"] += 1
    return {"counter": state["counter"], "items": len(state["items"]), "host_pid_before": host_pid,
            "tmp": Path("/tmp/state.txt").read_text(), "shm": sorted(os.listdir("/dev/shm")),
            "shm_mounts": [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                           ].count("/dev/shm"),
            "read": {p: attempt(read, p) for p in payload.get("read", [])}, **sandbox()}


def reach(url: str) -> dict:
    """What a fetch of `url` gave, and this process's network interfaces."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            got = f"status {response.status}"
    except OSError as exc:
        got = f"{type(exc).__name__}: {exc}"
    return {"fetched": got, "interfaces": sorted(name for _, name in socket.if_nameindex()),
            "process": os.environ.get("OUTLAST_PROCESS_ID")}


@task(id="reach")
def reach_task(payload: dict) -> dict:
    return reach(payload["url"])


@task(id="offline-reach", network=False)
def offline_reach(payload: dict) -> dict:
    return reach(payload["url"])


@task(id="offline-wait", network=False)
async def offline_wait(payload: dict) -> dict:
    """Without network before and after a checkpoint."""
    before = reach(payload["url"])
    host_pid = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("NSpid:"))
    await wait.for_(seconds=payload.get("seconds", 4))
    return {"before": before, "after": reach(payload["url"]), "host_pid_before": host_pid}
