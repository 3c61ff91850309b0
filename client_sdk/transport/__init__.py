"""Transports of the SDK: one :class:`Link` per connection to an edge.

``ws://`` / ``wss://`` URLs use WebSocket (:mod:`.ws`: our own RFC 6455 client on
an asyncio Protocol, frame codec in :mod:`.ws_frames`), ``quic://`` URLs raw
QUIC (:mod:`.quic`, ALPN ``edge-relay/1``).  A link carries whole protocol
frames both ways; ``send`` is reliable and ordered, ``send_unreliable`` may go
as a QUIC datagram (or reliably where there is none).  The client above is the
same for every transport.
"""

from __future__ import annotations

from client_sdk.transport.base import (
    QUIC_ALPN,
    WEBTRANSPORT_PATH,
    Link,
    LinkClosed,
    RefusedError,
    TlsOptions,
    TlsVerifyError,
    client_context,
    scheme_of,
)

__all__ = ["QUIC_ALPN", "WEBTRANSPORT_PATH", "Link", "LinkClosed", "RefusedError", "TlsOptions",
           "TlsVerifyError", "client_context", "open_link", "scheme_of"]


async def open_link(url: str, *, connect_timeout: float, ping_interval: float | None,
                    ping_timeout: float | None, tls: TlsOptions | None = None) -> Link:
    """Open a link to ``url``; raises ``ValueError`` for an unsupported URL,
    :class:`TlsVerifyError` when a ``wss://`` edge's certificate does not verify,
    ``ConnectError``/``OSError``/``TimeoutError`` when the edge cannot be reached."""
    scheme = scheme_of(url)
    if scheme in ("ws", "wss"):
        from .ws import WsLink

        return await WsLink.open(url, connect_timeout=connect_timeout,
                                 ping_interval=ping_interval, ping_timeout=ping_timeout,
                                 tls=tls)
    if scheme == "quic":
        from .quic import QuicLink

        return await QuicLink.open(url, connect_timeout=connect_timeout,
                                   ping_interval=ping_interval, ping_timeout=ping_timeout,
                                   tls=tls or TlsOptions())
    if scheme in ("wt", "https"):
        raise ValueError(f"{url!r}: WebTransport is for browsers; Python clients use quic://")
    raise ValueError(f"{url!r}: unsupported URL scheme (use ws://, wss:// or quic://)")
