"""The edge's QUIC listener: raw QUIC (ALPN ``edge-relay/1``) and WebTransport
over HTTP/3 (ALPN ``h3``) on one UDP port, feeding the same sessions as WebSocket.

Raw QUIC: the client opens one bidirectional stream and speaks the protocol on
it as length-prefixed records (:mod:`client_sdk.transport.records`); each QUIC
datagram carries one frame.  WebTransport: the browser sends an extended
CONNECT to ``/edge-relay``, then opens one bidirectional WebTransport stream
(same records) and may send HTTP/3 datagrams (one frame each).

Each connection carries at most one session.  Admission is the WebSocket one
(connection-rate token bucket, draining): a refused raw connection is closed
with 4004 and a retry hint in the reason, a refused WebTransport CONNECT gets
HTTP 503.  Idle connections end at ``quic_idle_timeout``; the edge sends a
QUIC PING every ``ping_interval`` seconds so NAT bindings stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    HandshakeCompleted,
    ProtocolNegotiated,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from client_sdk.protocol import ErrorCode
from client_sdk.transport import QUIC_ALPN, WEBTRANSPORT_PATH
from edge_node.runtime.tasks import spawn
from edge_node.transports.quic.conn import QuicConn

if TYPE_CHECKING:
    from edge_node.server import EdgeServer

__all__ = ["EdgeQuicProtocol", "quic_configuration", "start_quic"]

log = logging.getLogger("edge_node.transports.quic")
# aioquic logs every connection's handshake at INFO: far too much for an edge.
logging.getLogger("quic").setLevel(logging.WARNING)

#: DATAGRAM frame overhead (type + length varint) subtracted from the peer's limit.
_DATAGRAM_FRAME_OVERHEAD = 4


def quic_configuration(cert_pem: bytes, key_pem: bytes, idle_timeout: float) -> QuicConfiguration:
    """Server configuration: both ALPNs, datagrams on, the given certificate."""
    cfg = QuicConfiguration(is_client=False, alpn_protocols=[QUIC_ALPN, *H3_ALPN],
                            max_datagram_frame_size=65536, idle_timeout=idle_timeout)
    certs = x509.load_pem_x509_certificates(cert_pem)
    cfg.certificate, cfg.certificate_chain = certs[0], certs[1:]
    cfg.private_key = load_pem_private_key(key_pem, password=None)
    return cfg


class EdgeQuicProtocol(QuicConnectionProtocol):
    """One QUIC connection to the edge (at most one session)."""

    def __init__(self, *args: Any, edge: EdgeServer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge = edge
        self.h3: H3Connection | None = None
        self.conn: QuicConn | None = None
        self.closed = False
        self._alpn = ""
        self._wt_session: int | None = None
        self._ping: asyncio.TimerHandle | None = None
        self._hello_timer: asyncio.TimerHandle | None = None

    # -- helpers used by QuicConn -------------------------------------------------------

    def close_connection(self, code: int, reason: str) -> None:
        """Close the QUIC connection with application error ``code``."""
        if not self.closed:
            self._quic.close(error_code=code, reason_phrase=reason)
            self.transmit()

    def send_datagram(self, data: bytes, wt_session: int | None, cap: int) -> bool:
        """Queue a datagram; keep aioquic's queue at most ``cap`` long (stalest dropped)."""
        if self.closed:
            return False
        pending = self._quic._datagrams_pending
        dropped = False
        while len(pending) >= cap:
            pending.popleft()
            dropped = True
        if wt_session is not None and self.h3 is not None:
            self.h3.send_datagram(wt_session, data)
        else:
            self._quic.send_datagram_frame(data)
        return not dropped

    def _max_datagram(self) -> int:
        s = self.edge.settings
        remote = self._quic._remote_max_datagram_frame_size
        if not remote:
            return 0  # the peer takes no datagrams: everything goes on the stream
        limit = min(s.quic_max_datagram, remote - _DATAGRAM_FRAME_OVERHEAD)
        if self._wt_session is not None:
            limit -= 8  # the quarter-stream-id prefix (a varint)
        return max(0, limit)

    def _keepalive(self) -> None:
        if self.closed:
            return
        self._quic.send_ping(0)
        self.transmit()
        self._ping = asyncio.get_running_loop().call_later(
            self.edge.settings.ping_interval, self._keepalive)

    def _no_session(self) -> None:
        # Connected but never opened its session stream: the WebSocket rule
        # (HELLO within handshake_timeout) applies to the stream's first record,
        # the session loop times that; this covers a client that sends nothing.
        if self.conn is None and not self.closed:
            self.edge.stats.errors[ErrorCode.HANDSHAKE_TIMEOUT] += 1
            self.close_connection(ErrorCode.HANDSHAKE_TIMEOUT, "no HELLO in time")

    def _new_conn(self, stream_id: int) -> QuicConn:
        s = self.edge.settings
        # Records up to a little over the frame limit reach the session, which
        # answers an oversize frame with ERROR 4413 (as on WebSocket); far
        # larger ones close the connection with 4413 before being buffered.
        conn = QuicConn(self, stream_id, max_record=s.limits.max_frame_bytes + 1024,
                        inbound_limit=s.quic_inbound_queue, max_datagram=self._max_datagram(),
                        datagram_queue=s.quic_datagram_queue, wt_session=self._wt_session)
        self.conn = conn
        spawn(self._serve(conn))
        return conn

    async def _serve(self, conn: QuicConn) -> None:
        await self.edge.serve_conn(conn)
        # The session is over (e.g. the client finished its stream without
        # closing): the connection must not linger, kept alive by our PINGs.
        if not self.closed:
            await conn.close(1000, "session ended")

    # -- events ----------------------------------------------------------------------

    def quic_event_received(self, event: QuicEvent) -> None:
        # Never forwarded to the base class: its stream readers would let stream
        # objects be collected and FIN our session stream.
        if isinstance(event, ProtocolNegotiated):
            self._alpn = event.alpn_protocol or ""
            if self._alpn in H3_ALPN:
                self.h3 = H3Connection(self._quic, enable_webtransport=True)
        elif isinstance(event, HandshakeCompleted):
            self.edge.quic_handshakes += 1
            if self.h3 is None:
                wait = self.edge.admit()
                if wait:
                    self.close_connection(ErrorCode.OVERLOADED,
                                          f"edge busy or draining: retry in {int(wait * 1000)} ms")
                    return
            loop = asyncio.get_running_loop()
            self._ping = loop.call_later(self.edge.settings.ping_interval, self._keepalive)
            self._hello_timer = loop.call_later(self.edge.settings.handshake_timeout,
                                                self._no_session)
        elif isinstance(event, ConnectionTerminated):
            self.closed = True
            if self._ping is not None:
                self._ping.cancel()
            if self._hello_timer is not None:
                self._hello_timer.cancel()
            if self.conn is not None:
                self.conn.terminated(event.error_code, event.reason_phrase)
            return
        if self.h3 is not None:
            for h3_event in self.h3.handle_event(event):
                self._h3_event(h3_event)
            return
        if isinstance(event, StreamDataReceived):
            conn = self.conn
            if conn is None:
                if event.stream_id % 4 != 0:  # not a client-initiated bidirectional stream
                    return
                conn = self._new_conn(event.stream_id)
            if event.stream_id == conn.stream_id:
                conn.feed_stream(event.data, event.end_stream)
        elif isinstance(event, DatagramFrameReceived):
            if self.conn is not None:
                self.conn.feed_datagram(event.data)
        elif (isinstance(event, StreamReset) and self.conn is not None
              and event.stream_id == self.conn.stream_id):
            self.conn.terminated(event.error_code, "stream reset")

    def _respond(self, stream_id: int, status: int, extra: list[tuple[bytes, bytes]] | None = None,
                 end: bool = True) -> None:
        assert self.h3 is not None
        self.h3.send_headers(stream_id, [(b":status", str(status).encode()), *(extra or [])],
                             end_stream=end)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            h = dict(event.headers)
            path = h.get(b":path", b"").split(b"?", 1)[0]
            if (h.get(b":method") != b"CONNECT" or h.get(b":protocol") != b"webtransport"
                    or path != WEBTRANSPORT_PATH.encode()):
                self._respond(event.stream_id, 404)
            elif self._wt_session is not None:
                self._respond(event.stream_id, 429)  # one session per connection
            else:
                wait = self.edge.admit()
                if wait:
                    self._respond(event.stream_id, 503, [
                        (b"retry-after", str(max(1, round(wait))).encode())])
                else:
                    self._wt_session = event.stream_id
                    self._respond(event.stream_id, 200, [
                        (b"sec-webtransport-http3-draft", b"draft02")], end=False)
            self.transmit()
        elif isinstance(event, WebTransportStreamDataReceived):
            if event.session_id != self._wt_session:
                return
            conn = self.conn
            if conn is None:
                if event.stream_id % 4 != 0:
                    return
                conn = self._new_conn(event.stream_id)
            if event.stream_id == conn.stream_id:
                conn.feed_stream(event.data, event.stream_ended)
        elif isinstance(event, DatagramReceived):
            if self.conn is not None and event.stream_id == self._wt_session:
                self.conn.feed_datagram(event.data)
        elif (isinstance(event, DataReceived) and event.stream_id == self._wt_session
              and event.stream_ended):
            code = _capsule_close_code(event.data)
            if self.conn is not None and self.conn.wt_session_finished(code):
                return  # the answer to the edge's capsule: QuicConn.close ends the connection
            self.close_connection(0, "")


def _capsule_close_code(data: bytes) -> int:
    """The code of a CLOSE_WEBTRANSPORT_SESSION capsule in ``data`` (0 if none)."""
    with contextlib.suppress(IndexError, ValueError):
        pos = 0
        ctype, pos = _read_varint(data, pos)
        _, pos = _read_varint(data, pos)
        if ctype == 0x2843:
            return int.from_bytes(data[pos:pos + 4], "big")
    return 0


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    n = 1 << (first >> 6)
    v = first & 0x3F
    for b in data[pos + 1:pos + n]:
        v = (v << 8) | b
    if pos + n > len(data):
        raise ValueError("truncated varint")
    return v, pos + n


async def start_quic(edge: EdgeServer, host: str, port: int, cert_pem: bytes, key_pem: bytes
                     ) -> tuple[QuicServer, int]:
    """Listen on ``host:port`` (UDP; 0 = any free port); return the server and its port."""
    cfg = quic_configuration(cert_pem, key_pem, edge.settings.quic_idle_timeout)

    def make(*args: Any, **kwargs: Any) -> EdgeQuicProtocol:
        return EdgeQuicProtocol(*args, edge=edge, **kwargs)

    server = await serve(host, port, configuration=cfg, create_protocol=make)
    transport = server._transport
    assert transport is not None
    return server, int(transport.get_extra_info("sockname")[1])
