"""What a client session needs from its connection, whatever the transport.

:class:`EdgeServer` runs the HELLO handshake, resume, checkpoints and cleanup
once, over a :class:`SessionConn`; each transport adapts its connection to it:
:class:`WsConn` here (WebSocket, the hot path: it hands out the websockets
objects themselves, adding no per-message work), ``edge_node.transports.quic.conn.QuicConn``
for raw QUIC and WebTransport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from websockets.asyncio.server import ServerConnection

from edge_node.transports.outbound import Flusher, FrameSink, Outbound

__all__ = ["ConnectionGone", "SessionConn", "WsConn"]


class ConnectionGone(Exception):
    """The peer or the network ended the connection (no close frame to answer)."""


class SessionConn(Protocol):
    """A client connection as the session loop sees it.

    ``recv`` returns the next inbound message (``str`` only on WebSocket text
    frames) and raises :class:`ConnectionGone` or websockets'
    ``ConnectionClosed`` when the connection is over; ``messages`` iterates the
    same until a clean end.  ``close`` sends what is queued, then closes with
    an application code and reason; ``abort`` drops the connection at once.
    ``clean`` is true once the client closed normally (code 1000).
    ``partial_bytes`` is how much of an inbound message has arrived without the
    message being complete yet (0 between messages).
    """

    transport_name: str

    async def recv(self) -> bytes | str: ...
    def messages(self) -> AsyncIterator[bytes | str]: ...
    async def close(self, code: int, reason: str) -> None: ...
    def abort(self) -> None: ...
    def outbound(self, flusher: Flusher, *, limit: int, soft_limit: int,
                 on_slow: Callable[[], None]) -> FrameSink: ...
    @property
    def clean(self) -> bool: ...
    def partial_bytes(self) -> int: ...


class WsConn:
    """:class:`SessionConn` over a ``websockets`` server connection."""

    transport_name = "ws"
    __slots__ = ("ws",)

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def recv(self) -> bytes | str:
        """Next message; raises ``ConnectionClosed`` at the end."""
        return await self.ws.recv()

    def messages(self) -> AsyncIterator[bytes | str]:
        """The connection's own iterator (no wrapper on the hot path)."""
        return self.ws.__aiter__()

    async def close(self, code: int, reason: str) -> None:
        """WebSocket closing handshake with ``code`` and ``reason``."""
        await self.ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        t = self.ws.transport
        if t is not None and not t.is_closing():
            t.abort()

    def outbound(self, flusher: Flusher, *, limit: int, soft_limit: int,
                 on_slow: Callable[[], None]) -> FrameSink:
        """The plain batched writer on the TCP transport."""
        assert self.ws.transport is not None
        return Outbound(self.ws.transport, flusher, limit=limit, soft_limit=soft_limit,
                        on_slow=on_slow)

    def partial_bytes(self) -> int:
        """Bytes of a message begun and not complete: fragments of a fragmented message
        (plus one, so an empty first fragment counts) and bytes of a frame not read
        to its end."""
        p = self.ws.protocol
        size = p.current_size
        return (0 if size is None else size + 1) + len(p.reader.buffer)

    @property
    def clean(self) -> bool:
        """True if the client sent close code 1000."""
        rcvd = self.ws.protocol.close_rcvd
        return rcvd is not None and rcvd.code == 1000
