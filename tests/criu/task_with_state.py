"""Test task for tests/criu: holds state (counter, 50 MB bytearray, open temp file, TCP connection)
and ticks; on SIGUSR1 it prints a digest of all of it. Usage: python task_with_state.py PORT"""

import hashlib
import os
import signal
import socket
import sys
import tempfile
import time

port = int(sys.argv[1])
big = bytearray(os.urandom(1 << 20)) * 50
tmp = tempfile.TemporaryFile(dir=os.getcwd())  # noqa: SIM115 - unnamed (O_TMPFILE): criu carries it in the image
tmp.write(os.urandom(256 << 10))
tmp.flush()


def digests() -> str:
    tmp.seek(0)
    return f"big={hashlib.sha256(big).hexdigest()} tmp={hashlib.sha256(tmp.read()).hexdigest()}"


verify = False


def on_usr1(signum, frame):
    global verify
    verify = True


signal.signal(signal.SIGUSR1, on_usr1)  # as PID 1 of its namespace, unhandled signals are ignored
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
print(f"start pid={os.getpid()} {digests()}", flush=True)
counter = 0
while True:
    counter += 1
    line = f"tick {counter}\n".encode()
    try:
        sock.sendall(line)
    except OSError as exc:  # after a restore with --tcp-close the socket is closed
        print(f"reconnect after {type(exc).__name__}", flush=True)
        sock.close()
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(line)
    print(f"tick {counter}", flush=True)
    if verify:
        verify = False
        print(f"verify pid={os.getpid()} counter={counter} {digests()}", flush=True)
    time.sleep(0.02)
