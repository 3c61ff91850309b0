"""Raw QUIC links (aioquic, ALPN ``edge-relay/1``).

One bidirectional stream carries reliable frames as length-prefixed records
(:mod:`.records`); unreliable publishes go as QUIC datagrams when they fit
(at most ``MAX_DATAGRAM`` bytes: aioquic never sends a larger one and blocks
every later datagram behind it), else on the stream.  Liveness: a QUIC PING
every ``ping_interval`` seconds; no answer within ``ping_timeout`` ends the
link like a lost connection.  The edge's application close code (4xxx, 1000)
is the link's ``close_code``.

The client socket is connected to the edge's address, in its address family
(not aioquic's dual-stack default, which fails where IPv6 is disabled): a dead
edge's "port unreachable" then ends the link at once instead of after timeouts.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)

from .base import QUIC_ALPN, LinkClosed, RefusedError, TlsOptions
from .records import RecordDecoder, RecordTooLarge, encode_record

__all__ = ["MAX_DATAGRAM", "QuicLink"]

#: Largest frame sent as a datagram (larger unreliable frames use the stream).
MAX_DATAGRAM = 1150
#: Datagrams waiting in aioquic's queue before the stalest is dropped.
DATAGRAM_QUEUE = 64
_MAX_RECORD = 16 * 1024 * 1024
_OVERHEAD = 4


class _Protocol(QuicConnectionProtocol):
    link: QuicLink | None = None
    #: Set once the UDP socket is closed: aioquic's timers must not send any more.
    dead = False

    def quic_event_received(self, event: QuicEvent) -> None:
        # Not forwarded to the base class (its stream readers can FIN our stream).
        if self.link is not None:
            self.link._event(event)

    def transmit(self) -> None:
        if not self.dead:
            super().transmit()

    def _handle_timer(self) -> None:
        if not self.dead:
            super()._handle_timer()

    def error_received(self, exc: Exception) -> None:
        # The socket is connected to the edge, so an ICMP "port unreachable"
        # (edge process gone) surfaces here: fail now instead of at a timeout.
        if isinstance(exc, ConnectionRefusedError):
            waiter = self._connected_waiter
            if waiter is not None and not waiter.done():
                self._connected_waiter = None
                waiter.set_exception(ConnectionError("edge unreachable (port closed)"))
            if self.link is not None and not self.link._ended:
                self.link._end(None, "edge unreachable (port closed)")

    def kill(self) -> None:
        """Stop all sending and timers (before the socket is closed)."""
        self.dead = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class QuicLink:
    """A :class:`~client_sdk.transport.Link` over one QUIC connection."""

    transport = "quic"

    def __init__(self, url: str, proto: _Protocol, udp: asyncio.DatagramTransport) -> None:
        self.url = url
        self._proto = proto
        self._quic: QuicConnection = proto._quic
        self._udp = udp
        self._stream_id = -1
        self._decoder = RecordDecoder(_MAX_RECORD)
        self._queue: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._code: int | None = None
        self._reason = ""
        self._terminated = asyncio.Event()
        self._tx_scheduled = False
        self._keepalive: asyncio.Task[None] | None = None
        self.datagrams_sent = 0
        self.datagrams_received = 0

    @classmethod
    async def open(cls, url: str, *, connect_timeout: float, ping_interval: float | None,
                   ping_timeout: float | None, tls: TlsOptions) -> QuicLink:
        """Handshake with the edge at ``quic://host:port``."""
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
        if not host or not port:
            raise ValueError(f"{url!r}: a quic:// URL needs a host and a port")
        idle = max(5.0, 2 * ((ping_interval or 5.0) + (ping_timeout or 5.0)))
        cfg = QuicConfiguration(is_client=True, alpn_protocols=[QUIC_ALPN], server_name=host,
                                max_datagram_frame_size=65536, idle_timeout=idle)
        if not tls.verify:
            cfg.verify_mode = ssl.CERT_NONE
        else:
            ca = tls.resolved_ca_file()
            if ca:
                cfg.load_verify_locations(cafile=ca)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        addr = (str(infos[0][4][0]), int(infos[0][4][1]))
        conn = QuicConnection(configuration=cfg)
        udp, proto = await loop.create_datagram_endpoint(lambda: _Protocol(conn),
                                                         remote_addr=addr)
        link = cls(url, proto, udp)
        proto.link = link
        try:
            proto.connect(udp.get_extra_info("peername"))
            async with asyncio.timeout(connect_timeout):
                await proto.wait_connected()
        except ConnectionError as exc:
            proto.kill()
            udp.close()
            why = link._reason or str(exc) or "handshake refused (certificate or ALPN)"
            raise RefusedError(f"{url}: QUIC {why}", _retry_hint(link._reason)) from exc
        except BaseException:
            proto.kill()
            udp.close()
            raise
        link._stream_id = conn.get_next_available_stream_id()
        if ping_interval:
            link._keepalive = loop.create_task(link._ping_loop(ping_interval,
                                                               ping_timeout or ping_interval))
        return link

    # -- events ---------------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _event(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            if event.stream_id != self._stream_id or self._ended:
                return
            try:
                self._queue.extend(self._decoder.feed(event.data))
            except RecordTooLarge as exc:
                self._end(None, str(exc))
                self.abort()
            self._wake()
        elif isinstance(event, DatagramFrameReceived):
            self.datagrams_received += 1
            self._queue.append(event.data)
            self._wake()
        elif isinstance(event, StreamReset) and event.stream_id == self._stream_id:
            self._end(None, "stream reset")
        elif isinstance(event, ConnectionTerminated):
            code = event.error_code
            self._end(code if 1000 <= code < 5000 else None, event.reason_phrase)
            # aioquic reports this once the draining period is over: nothing more
            # will be sent or received, so the socket can go now.
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        self._proto.kill()
        self._udp.close()

    def _end(self, code: int | None, reason: str) -> None:
        if not self._terminated.is_set():
            self._code, self._reason = code, reason
            self._terminated.set()
        self._ended = True
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._wake()

    async def _ping_loop(self, interval: float, timeout: float) -> None:
        while not self._ended:
            await asyncio.sleep(interval)
            # Not proto.ping(): it shields its future, which then fails unretrieved
            # when the connection ends after our timeout.
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._proto._ping_waiters[id(waiter)] = waiter
            self._quic.send_ping(id(waiter))
            self._proto.transmit()
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except (TimeoutError, ConnectionError):
                if not self._ended:
                    self._end(None, "ping timeout")
                    self.abort()
                return
            finally:
                # Also when cancelled: aioquic would later set a result on it.
                self._proto._ping_waiters.pop(id(waiter), None)

    # -- Link -------------------------------------------------------------------------

    def _transmit(self) -> None:
        self._tx_scheduled = False
        if not self._ended:
            self._proto.transmit()

    def _schedule(self) -> None:
        if not self._tx_scheduled:
            self._tx_scheduled = True
            asyncio.get_running_loop().call_soon(self._transmit)

    def send(self, data: bytes) -> None:
        """Queue one record on the stream (sent within this loop tick)."""
        if self._ended:
            return
        self._quic.send_stream_data(self._stream_id, encode_record(data))
        self._schedule()

    def send_unreliable(self, data: bytes) -> None:
        """A datagram if it fits (stalest dropped past ``DATAGRAM_QUEUE``), else the stream."""
        if self._ended:
            return
        remote = self._quic._remote_max_datagram_frame_size
        if not remote or len(data) > min(MAX_DATAGRAM, remote - _OVERHEAD):
            self.send(data)
            return
        pending = self._quic._datagrams_pending
        while len(pending) >= DATAGRAM_QUEUE:
            pending.popleft()
        self._quic.send_datagram_frame(data)
        self.datagrams_sent += 1
        self._schedule()

    async def recv(self) -> bytes:
        """Next frame (stream record or datagram); :class:`LinkClosed` at the end."""
        while not self._queue:
            if self._ended:
                raise LinkClosed(self._code, self._reason)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    async def messages(self) -> AsyncIterator[bytes | str]:
        """Frames until the end; a normal close (1000) ends quietly, else raises."""
        while True:
            try:
                yield await self.recv()
            except LinkClosed:
                if self._code == 1000:
                    return
                raise

    @property
    def close_code(self) -> int | None:
        """The edge's application close code (None if lost without one)."""
        return self._code

    @property
    def close_reason(self) -> str:
        """The edge's close reason."""
        return self._reason

    def buffered(self) -> int:
        """Stream bytes not yet acknowledged by the edge."""
        stream = self._quic._streams.get(self._stream_id)
        if stream is None:
            return 0
        return int(stream.sender._buffer_stop - stream.sender._buffer_start)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a CONNECTION_CLOSE with ``code`` and release the socket.

        The close is not waited for (aioquic would keep the connection draining
        for three probe timeouts, ~100 ms): if that one packet is lost, the edge
        notices at its idle timeout, as after any network cut.
        """
        if not self._ended:
            self._quic.close(error_code=code, reason_phrase=reason)
            self._proto.transmit()
            self._end(code, reason)
        self._proto.kill()
        self._udp.close()

    def abort(self) -> None:
        """Drop the connection: no close is sent (the edge notices by idle timeout)."""
        self._end(self._code, self._reason or "aborted")
        self._proto.kill()
        self._udp.abort()


def _retry_hint(reason: str) -> float:
    """Seconds from an edge refusal such as ``... retry in 250 ms``."""
    parts = reason.rsplit("retry in ", 1)
    if len(parts) == 2 and parts[1].endswith(" ms") and parts[1][:-3].isdigit():
        return int(parts[1][:-3]) / 1000.0
    return 0.0
