"""WebSocket links (``websockets``): one binary message per frame."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.connection import broadcast
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import LinkClosed, RefusedError

__all__ = ["WsLink"]


class WsLink:
    """A :class:`~client_sdk.transport.Link` over a WebSocket connection.

    """

    transport = "ws"
    __slots__ = ("url", "ws")

    def __init__(self, url: str, ws: ClientConnection) -> None:
        self.url = url
        self.ws = ws

    @classmethod
    async def open(cls, url: str, *, connect_timeout: float, ping_interval: float | None,
                   ping_timeout: float | None) -> WsLink:
        """Connect; :class:`RefusedError` (with its retry hint) on an HTTP refusal."""
        try:
            ws = await ws_connect(
                url, compression=None, max_size=None, max_queue=None,
                open_timeout=connect_timeout, close_timeout=1.0,
                # Client-side keepalive: a half-open link (network cut, frozen
                # edge) is noticed within ping_interval + ping_timeout.
                ping_interval=ping_interval, ping_timeout=ping_timeout)
        except InvalidStatus as exc:
            hint = exc.response.headers.get("X-Retry-After-Ms")
            raise RefusedError(
                f"{url}: refused with HTTP {exc.response.status_code}",
                int(hint) / 1000.0 if exc.response.status_code == 503 and hint
                and hint.isdigit() else 0.0) from exc
        return cls(url, ws)

    def send(self, data: bytes) -> None:
        """Synchronous write (``broadcast`` never blocks; see ``buffered``)."""
        broadcast([self.ws], data)

    send_unreliable = send

    async def recv(self) -> bytes:
        """Next binary message (text messages are skipped)."""
        while True:
            try:
                raw = await self.ws.recv()
            except ConnectionClosed as exc:
                raise LinkClosed(self.close_code, self.close_reason) from exc
            if isinstance(raw, bytes):
                return raw

    def messages(self) -> AsyncIterator[bytes | str]:
        """The connection's own iterator (raises ``ConnectionClosed`` on an abnormal end)."""
        return self.ws.__aiter__()

    @property
    def close_code(self) -> int | None:
        """Code of the edge's close frame, if one arrived."""
        rcvd = self.ws.protocol.close_rcvd
        return rcvd.code if rcvd is not None else None

    @property
    def close_reason(self) -> str:
        """Reason of the edge's close frame."""
        rcvd = self.ws.protocol.close_rcvd
        return rcvd.reason if rcvd is not None else ""

    def buffered(self) -> int:
        """Bytes in the TCP transport's write buffer."""
        t = self.ws.transport
        return t.get_write_buffer_size() if t is not None else 0

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """WebSocket closing handshake."""
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection."""
        t = self.ws.transport
        if t is not None:
            t.abort()
