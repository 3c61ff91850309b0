"""A lean subscriber for the load generator: the edge protocol's receive path
without the SDK's connection machinery.

It speaks just enough WebSocket (RFC 6455: the upgrade, masked client frames,
unmasked server frames, ping/pong, close) on a plain :class:`asyncio.Protocol`,
sends HELLO and JOIN, then decodes every frame with the SDK's own codec
(:class:`client_sdk.protocol.Decoder`) and hands each MESSAGE to ``on_message``.
No reconnect, no resume, no dedupe, no publish: it exists so the load generator
can measure an edge faster than the SDK can receive. Reports say which receiver
was used (``meta.params.receiver``); the SDK's own figure is measured separately
(``python -m bench recv-path``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from client_sdk.protocol import (
    PROTOCOL_VERSION,
    Decoder,
    Hello,
    Join,
    Joined,
    Message,
    Ping,
    Pong,
    Welcome,
    encode,
)
from client_sdk.protocol.limits import Limits

_LIMITS = Limits(max_frame_bytes=16 * 1024 * 1024, max_presence_list=100_000)
_OP_CONT, _OP_BIN, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x2, 0x8, 0x9, 0xA
MAX_FRAME = 16 * 1024 * 1024


class LeanError(Exception):
    """The lean client could not connect or was refused."""


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (FIN set) carrying ``payload``."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    # XOR with the repeated key in one big-int operation (fast for short frames).
    rep = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(rep, "big")).to_bytes(n, "big")
    return head + key + masked


def parse_frames(buf: bytearray) -> tuple[list[tuple[int, bool, bytes]], int]:
    """Parse complete unmasked server frames from ``buf``.

    Returns ``([(opcode, fin, payload), ...], bytes consumed)``; raises
    :class:`LeanError` on a masked or oversized frame.
    """
    out: list[tuple[int, bool, bytes]] = []
    pos, end = 0, len(buf)
    while end - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        if b1 & 0x80:
            raise LeanError("server frame is masked")
        n = b1 & 0x7F
        hdr = 2
        if n == 126:
            if end - pos < 4:
                break
            n = (buf[pos + 2] << 8) | buf[pos + 3]
            hdr = 4
        elif n == 127:
            if end - pos < 10:
                break
            n = int.from_bytes(buf[pos + 2:pos + 10], "big")
            hdr = 10
        if n > MAX_FRAME:
            raise LeanError(f"frame of {n} bytes is too large")
        if end - pos < hdr + n:
            break
        out.append((b0 & 0x0F, bool(b0 & 0x80), bytes(buf[pos + hdr:pos + hdr + n])))
        pos += hdr + n
    return out, pos


class LeanSubscriber(asyncio.Protocol):
    """One connection that joins one room and streams its messages to ``on_message``."""

    def __init__(self, on_message: Callable[[Message], None]) -> None:
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.decoder = Decoder(_LIMITS)
        self._buf = bytearray()
        self._upgraded = False
        self._frag: list[bytes] = []
        self._waiter: asyncio.Future[Any] | None = None
        self._want: type | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.received = 0

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(LeanError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[:end + 4]
            self._resolve(head)
            if not head.startswith("HTTP/1.1 101"):
                return
            self._upgraded = True
        try:
            frames, used = parse_frames(buf)
        except LeanError as exc:
            self._fail(exc)
            return
        if used:
            del buf[:used]
        for op, fin, payload in frames:
            if op in (_OP_BIN, _OP_CONT):
                if not fin:
                    self._frag.append(payload)
                    continue
                if self._frag:
                    payload = b"".join([*self._frag, payload])
                    self._frag.clear()
                self._frame(payload)
            elif op == _OP_PING:
                self._write(mask_frame(_OP_PONG, payload))
            elif op == _OP_CLOSE:
                self._write(mask_frame(_OP_CLOSE, payload[:2]))
                if self.transport is not None:
                    self.transport.close()

    # -- protocol frames ----------------------------------------------------------

    def _frame(self, payload: bytes) -> None:
        try:
            f = self.decoder.decode(payload)
        except Exception:  # an undecodable frame is skipped, like the SDK does
            return
        t = type(f)
        if t is Message:
            self.received += 1
            self.on_message(f)  # type: ignore[arg-type]
        elif t is Ping:
            self._write(mask_frame(_OP_BIN, encode(Pong(f.stamp))))  # type: ignore[union-attr]
        elif self._want is not None and t is self._want:
            self._resolve(f)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _resolve(self, value: Any) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(value)

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    async def _expect(self, want: type | None, send: bytes, timeout: float) -> Any:
        self._waiter = asyncio.get_running_loop().create_future()
        self._want = want
        self._write(send)
        try:
            async with asyncio.timeout(timeout):
                return await self._waiter
        finally:
            self._waiter = None
            self._want = None

    # -- public -------------------------------------------------------------------

    async def open(self, url: str, token: str, name: str, room: str,
                   timeout: float = 30.0) -> None:
        """Upgrade, HELLO → WELCOME, JOIN → JOINED; raise :class:`LeanError` if refused."""
        u = urlsplit(url)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        head = await self._expect(None, req, timeout)
        if not str(head).startswith("HTTP/1.1 101"):
            raise LeanError(f"upgrade refused: {str(head).splitlines()[0]}")
        hello = mask_frame(_OP_BIN, encode(Hello(PROTOCOL_VERSION, token, name, None)))
        await self._expect(Welcome, hello, timeout)
        await self._expect(Joined, mask_frame(_OP_BIN, encode(Join(1, room, 0))), timeout)

    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def close(self) -> None:
        if self.is_open():
            self._write(mask_frame(_OP_CLOSE, struct.pack("!H", 1000)))
            assert self.transport is not None
            self.transport.close()
        try:
            async with asyncio.timeout(2.0):
                await self.closed
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


async def open_lean(url: str, token: str, name: str, room: str,
                    on_message: Callable[[Message], None]) -> LeanSubscriber:
    """Connect a :class:`LeanSubscriber` to ``url`` and join ``room``."""
    u = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: LeanSubscriber(on_message),
                                            u.hostname or "127.0.0.1", u.port or 80)
    try:
        await proto.open(url, token, name, room)
    except BaseException:
        await proto.close()
        raise
    return proto
