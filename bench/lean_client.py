"""A lean subscriber for the load generator: the edge protocol's receive path
without the SDK's connection machinery.

It speaks WebSocket with the SDK's own sans-I/O RFC 6455 code
(:mod:`client_sdk.transport.ws_frames`, :mod:`client_sdk.transport.ws_handshake`)
on a plain :class:`asyncio.Protocol`, sends HELLO and JOIN, then decodes every
frame with the SDK's own codec (:class:`client_sdk.protocol.Decoder`) and hands
each MESSAGE to ``on_message``. No reconnect, no resume, no dedupe, no publish:
it exists so the load generator can measure an edge faster than the SDK can
receive. Reports say which receiver was used (``meta.params.receiver``); the
SDK's own figure is measured separately (``python -m bench recv-path``).
"""

from __future__ import annotations

import asyncio
import ssl
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
from client_sdk.transport.ws_frames import (
    OP_BINARY,
    OP_PONG,
    Close,
    FrameReader,
    WsProtocolError,
    encode_close,
    encode_frame,
)
from client_sdk.transport.ws_frames import Ping as WsPing
from client_sdk.transport.ws_handshake import (
    HandshakeError,
    build_request,
    check_upgrade,
    make_key,
    parse_response,
)

_LIMITS = Limits(max_frame_bytes=16 * 1024 * 1024, max_presence_list=100_000)
MAX_FRAME = 16 * 1024 * 1024


class LeanError(Exception):
    """The lean client could not connect or was refused."""


class LeanSubscriber(asyncio.Protocol):
    """One connection that joins one room and streams its messages to ``on_message``."""

    def __init__(self, on_message: Callable[[Message], None]) -> None:
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.decoder = Decoder(_LIMITS)
        self._head = bytearray()
        self._key = ""
        self._upgraded = False
        self._reader = FrameReader(MAX_FRAME)
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
        if not self._upgraded:
            head = self._head
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                check_upgrade(parse_response(bytes(head[:end])), self._key)
            except HandshakeError as exc:
                self._fail(LeanError(f"upgrade refused: {exc}"))
                return
            data = bytes(head[end + 4:])
            self._upgraded = True
            self._resolve(None)
        try:
            events = self._reader.feed(data)
        except WsProtocolError as exc:
            self._write(encode_close(exc.code))
            self._fail(LeanError(str(exc)))
            return
        for ev in events:
            if type(ev) is bytes:
                self._frame(ev)
            elif type(ev) is WsPing:
                self._write(encode_frame(OP_PONG, ev.payload))
            elif type(ev) is Close:
                self._write(encode_close(ev.code))
                if self.transport is not None:
                    self.transport.close()
                return

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
            self._write(encode_frame(OP_BINARY, encode(Pong(f.stamp))))  # type: ignore[union-attr]
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
        self._key = make_key()
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        await self._expect(None, build_request(u.netloc, target, self._key), timeout)
        hello = encode_frame(OP_BINARY, encode(Hello(PROTOCOL_VERSION, token, name, None)))
        await self._expect(Welcome, hello, timeout)
        await self._expect(Joined, encode_frame(OP_BINARY, encode(Join(1, room, 0))), timeout)

    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def close(self) -> None:
        if self.is_open():
            self._write(encode_close(1000))
            assert self.transport is not None
            self.transport.close()
        try:
            async with asyncio.timeout(2.0):
                await self.closed
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


async def open_lean(url: str, token: str, name: str, room: str,
                    on_message: Callable[[Message], None],
                    ssl_context: ssl.SSLContext | None = None) -> LeanSubscriber:
    """Connect a :class:`LeanSubscriber` to ``url`` and join ``room`` (over TLS with
    ``ssl_context``, for ``wss://``)."""
    u = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: LeanSubscriber(on_message),
                                            u.hostname or "127.0.0.1",
                                            u.port or (443 if ssl_context else 80),
                                            ssl=ssl_context)
    try:
        await proto.open(url, token, name, room)
    except BaseException:
        await proto.close()
        raise
    return proto
