"""One client session over QUIC (raw ALPN or WebTransport), as a :class:`SessionConn`.

The listener (:mod:`edge_node.transports.quic.listener`) feeds it what arrives: records
from the session stream (:meth:`QuicConn.feed_stream`), datagrams
(:meth:`QuicConn.feed_datagram`) and the end of the connection
(:meth:`QuicConn.terminated`).  The session loop reads them with
:meth:`recv`; the send path is a :class:`QuicOutbound` on the same stream.

Inbound is bounded by bytes (``inbound_limit``, like the WebSocket read
queue): datagrams past it are dropped (they are latest-value updates); a
stream record past it closes the connection with 4003 (the client sends far
faster than the edge processes), since aioquic grows a stream's flow-control
window as data arrives, not as it is consumed, so reading cannot be paused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from client_sdk.protocol import ErrorCode
from client_sdk.transport.records import RecordDecoder, RecordTooLarge
from edge_node.sessions.session import SessionClose
from edge_node.transports.connection import ConnectionGone
from edge_node.transports.outbound import Flusher, FrameSink
from edge_node.transports.quic.outbound import QuicOutbound

if TYPE_CHECKING:
    from edge_node.transports.quic.listener import EdgeQuicProtocol

__all__ = ["QuicConn"]

#: WebTransport CLOSE_WEBTRANSPORT_SESSION capsule type.
_WT_CLOSE_CAPSULE = 0x2843

#: Seconds the connection outlives a WebTransport session the edge closed, once
#: the browser has answered the capsule (see ``QuicConn.close``).
_WT_CLOSE_GRACE = 0.25


def _varint(v: int) -> bytes:
    if v < 0x40:
        return bytes((v,))
    if v < 0x4000:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 0x40000000:
        return (v | 0x80000000).to_bytes(4, "big")
    return (v | 0xC000000000000000).to_bytes(8, "big")


def wt_close_capsule(code: int, reason: str) -> bytes:
    """A CLOSE_WEBTRANSPORT_SESSION capsule (code, UTF-8 reason of at most 1024 bytes)."""
    body = code.to_bytes(4, "big") + reason.encode()[:1024]
    return _varint(_WT_CLOSE_CAPSULE) + _varint(len(body)) + body


class QuicConn:
    """A session's QUIC connection: one bidirectional stream plus datagrams.

    ``wt_session`` is the WebTransport session (CONNECT stream) id, or None on
    raw QUIC.
    """

    def __init__(self, proto: EdgeQuicProtocol, stream_id: int, *, max_record: int,
                 inbound_limit: int, max_datagram: int, datagram_queue: int,
                 wt_session: int | None = None) -> None:
        self.proto = proto
        self.stream_id = stream_id
        self.wt_session = wt_session
        self.transport_name = "webtransport" if wt_session is not None else "quic"
        self._decoder = RecordDecoder(max_record)
        self._queue: deque[bytes | BaseException] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._inbound_limit = inbound_limit
        self._queued_bytes = 0
        self._max_datagram = max_datagram
        self._datagram_queue = datagram_queue
        self._ended = False
        self._closing = False
        #: The edge sent its CLOSE_WEBTRANSPORT_SESSION capsule (``close``).
        self.capsule_sent = False
        self._close_code = 0
        self.peer_code: int | None = None
        self.peer_reason = ""
        self.datagrams_in = 0
        self.datagrams_dropped_in = 0
        self.out: QuicOutbound | None = None

    # -- fed by the listener ------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def feed_stream(self, data: bytes, end: bool) -> None:
        """Bytes of the session stream arrived (``end``: the client finished it)."""
        if self._ended:
            return
        try:
            records = self._decoder.feed(data) if data else []
        except RecordTooLarge as exc:
            self._queue.append(SessionClose(ErrorCode.FRAME_TOO_LARGE, str(exc)))
            self._ended = True
            self._wake()
            return
        q = self._queue
        if records:
            n = sum(len(r) for r in records)
            if self._queued_bytes + n > self._inbound_limit:
                q.append(SessionClose(ErrorCode.RATE_LIMITED,
                                      "inbound queue full: sending faster than the edge reads"))
                self._ended = True
            else:
                self._queued_bytes += n
                q.extend(records)
        if end and not self._ended:
            self._ended = True
            q.append(ConnectionGone("client finished its stream"))
        self._wake()

    def feed_datagram(self, data: bytes) -> None:
        """One datagram (one protocol frame) arrived."""
        if self._ended:
            return
        if self._queued_bytes + len(data) > self._inbound_limit:
            self.datagrams_dropped_in += 1
            return
        self._queued_bytes += len(data)
        self.datagrams_in += 1
        self._queue.append(data)
        self._wake()

    def terminated(self, code: int | None, reason: str) -> None:
        """The QUIC connection (or WebTransport session) is over."""
        if self.peer_code is None:
            self.peer_code, self.peer_reason = code, reason
        if not self._ended:
            self._ended = True
            self._queue.append(ConnectionGone(f"connection closed ({code} {reason})"))
        if self.out is not None:
            self.out.closed = True
        self._wake()

    def wt_session_finished(self, code: int) -> bool:
        """The browser finished the CONNECT stream (``code``: that of its
        CLOSE_WEBTRANSPORT_SESSION capsule, 0 if none).  True if that answers the
        edge's own capsule: :meth:`close` then ends the connection, and the close
        counts as the edge's (code ``_close_code``), not as a clean client close."""
        if self.capsule_sent:
            self.terminated(self._close_code, "answered the edge's close")
            return True
        self.terminated(1000 if code == 0 else code, "webtransport closed")
        return False

    # -- SessionConn ---------------------------------------------------------------

    async def recv(self) -> bytes:
        """Next inbound frame; raises ``ConnectionGone`` (or ``SessionClose``) at the end."""
        while not self._queue:
            if self._ended:
                raise ConnectionGone("connection closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._queue.popleft()
        if isinstance(item, BaseException):
            self._queue.appendleft(item)  # stays the answer to every later recv
            raise item
        self._queued_bytes -= len(item)
        return item

    async def messages(self) -> AsyncIterator[bytes | str]:
        """Inbound frames until the connection ends (a clean end stops quietly)."""
        while True:
            try:
                yield await self.recv()
            except ConnectionGone:
                if self.clean:
                    return
                raise

    def partial_bytes(self) -> int:
        """Bytes of a record begun on the stream and not complete."""
        return self._decoder.buffered

    @property
    def clean(self) -> bool:
        """True if the client closed with code 1000 (or 0, QUIC's NO_ERROR)."""
        return self.peer_code in (1000, 0) and self.peer_reason != "Idle timeout"

    def outbound(self, flusher: Flusher, *, limit: int, soft_limit: int,
                 on_slow: Callable[[], None]) -> FrameSink:
        """The QUIC send path (stream records + guarded datagrams)."""
        self.out = QuicOutbound(self, flusher, limit=limit, soft_limit=soft_limit,
                                on_slow=on_slow, max_datagram=self._max_datagram,
                                datagram_queue=self._datagram_queue)
        return self.out

    async def close(self, code: int, reason: str, timeout: float = 1.0) -> None:
        """Send what is queued, end the stream, wait (bounded) until it is acknowledged,
        then close the connection with ``code`` (as the QUIC application error
        code, or in a WebTransport close capsule)."""
        if self._closing:
            return
        self._closing = True
        self._close_code = code
        if self.out is not None:
            self.out.flush()
            self.out.closed = True
        proto = self.proto
        quic = proto._quic
        with contextlib.suppress(Exception):
            quic.send_stream_data(self.stream_id, b"", end_stream=True)
            if self.wt_session is not None and proto.h3 is not None:
                # The capsule is HTTP message content: it travels in an HTTP/3
                # DATA frame on the CONNECT stream (RFC 9297 section 3.2), then
                # FIN.  Written raw, a browser reads it as an unknown HTTP/3
                # frame type, skips it, and reports closeCode 0 with no reason.
                proto.h3.send_data(self.wt_session, wt_close_capsule(code, reason),
                                   end_stream=True)
                self.capsule_sent = True
            proto.transmit()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # aioquic has no "acknowledged" event to wait on: poll, bounded.  On
        # WebTransport, wait for the browser's answer to the capsule (FIN on the
        # CONNECT stream, which sets peer_code): a CONNECTION_CLOSE overtaking
        # the capsule would leave the browser without it.
        while (self.peer_code is None  # noqa: ASYNC110
               and (self.capsule_sent or self.get_write_buffer_size() > 0)
               and loop.time() < deadline):
            await asyncio.sleep(0.01)
        if self.capsule_sent and self.peer_code is not None and not proto.closed:
            # The browser has the capsule (it answered with FIN on the CONNECT
            # stream) but still has to hand it to the page: a CONNECTION_CLOSE
            # right behind it races that, and Chromium then rejects
            # WebTransport.closed with "Connection lost" instead of resolving it
            # with the code and reason.  Chromium does not close the connection
            # itself soon after, so wait a grace (bounded by ``timeout``).
            grace_end = min(deadline, loop.time() + _WT_CLOSE_GRACE)
            while not proto.closed and loop.time() < grace_end:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        proto.close_connection(code, reason)
        self.terminated(code, reason)

    def abort(self) -> None:
        """Close the QUIC connection now (nothing more is sent)."""
        self._closing = True
        self.proto.close_connection(ErrorCode.SHUTTING_DOWN, "edge shutting down")
        self.terminated(None, "aborted")

    # -- DatagramSink (used by QuicOutbound) ---------------------------------------------

    def write(self, data: bytes) -> None:
        """Append records to the session stream (sent at the next transmit)."""
        self.proto._quic.send_stream_data(self.stream_id, data)

    def get_write_buffer_size(self) -> int:
        """Session-stream bytes not yet acknowledged by the client."""
        stream = self.proto._quic._streams.get(self.stream_id)
        if stream is None:
            return 0
        s = stream.sender
        return int(s._buffer_stop - s._buffer_start)

    def is_closing(self) -> bool:
        """True once the connection is closing or gone."""
        return self._closing or self.peer_code is not None or self.proto.closed

    def send_datagram(self, data: bytes) -> bool:
        """Queue one datagram; drop the stalest if aioquic's own queue is full."""
        return self.proto.send_datagram(data, self.wt_session, self._datagram_queue)

    def datagrams_waiting(self) -> int:
        """Datagrams in aioquic's queue, waiting for the congestion window."""
        return len(self.proto._quic._datagrams_pending)

    def transmit(self) -> None:
        """Send what was queued outside an aioquic callback."""
        self.proto.transmit()
