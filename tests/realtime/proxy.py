"""A TCP proxy that drops the first connection whose request line holds `cut_path` after `cut_after`
bytes went back to the client: a real connection lost mid-stream, for the browser to reconnect."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    def __init__(self, upstream_port: int, *, cut_path: str, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_path = cut_path.encode()
        self.cut_after = cut_after
        self.cuts = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        request = client.recv(65536)
        upstream.sendall(request)
        cutting = self.cuts == 0 and self.cut_path in request.split(b"\r\n", 1)[0]
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        sent = 0
        with contextlib.suppress(OSError):
            while data := upstream.recv(4096):
                client.sendall(data)
                sent += len(data)
                if cutting and sent >= self.cut_after:
                    self.cuts += 1
                    break
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(4096):
                target.sendall(data)

    def close(self) -> None:
        self.server.close()
