"""Length-prefixed JSON frames for the control channel (see docs/protocol.md).

A frame is a 4-byte big-endian length followed by that many bytes of JSON: one pydantic model
from `outlast.wire`, discriminated by its `type` field.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter

from .wire import FRAME_HEADER_BYTES

MAX_FRAME_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


def encode_frame(message: BaseModel) -> bytes:
    body = message.model_dump_json().encode()
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body


def _body_length(header: bytes) -> int:
    length = int.from_bytes(header, "big")
    if length > MAX_FRAME_BYTES:
        raise ValueError(f"control frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    return length


class FrameSocket:
    """Blocking frame I/O over a connected socket; sends are safe from several threads."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: BaseModel) -> None:
        data = encode_frame(message)
        with self._send_lock:
            self._sock.sendall(data)

    def recv(self, adapter: TypeAdapter[T]) -> T | None:
        """The next message, or None when the peer closed the connection."""
        header = self._recv_exactly(FRAME_HEADER_BYTES)
        if header is None:
            return None
        body = self._recv_exactly(_body_length(header))
        if body is None:
            return None
        return adapter.validate_json(body)

    def _recv_exactly(self, size: int) -> bytes | None:
        buffer = bytearray(size)
        view = memoryview(buffer)
        received = 0
        while received < size:
            count = self._sock.recv_into(view[received:])
            if count == 0:
                return None
            received += count
        return bytes(buffer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


async def read_frame(reader: asyncio.StreamReader, adapter: TypeAdapter[T]) -> T | None:
    """The next message from an asyncio stream, or None at end of stream."""
    try:
        header = await reader.readexactly(FRAME_HEADER_BYTES)
        body = await reader.readexactly(_body_length(header))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return adapter.validate_json(body)


def write_frame(writer: asyncio.StreamWriter, message: Any) -> None:
    writer.write(encode_frame(message))
