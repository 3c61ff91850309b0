"""WebSocket links: RFC 6455 on a plain :class:`asyncio.Protocol`.

The receive path is the load generator's hot path, so it is kept short: each
socket read goes through :class:`~.ws_frames.FrameReader` and the binary
messages land in a deque that ``recv()``/``messages()`` drain; one wake-up of
the reading task per read, not per message.  (Measured with ``python -m bench
recv-path --pin --rate 2000 --batch 1``: the whole SDK on this link ~6.6 µs of CPU
per one-message read, a bare ``websockets`` client ~9 µs, the SDK on it ~9.5 µs.)

Contract, beyond :class:`~client_sdk.transport.Link`:

- Handshake: ``ws://`` or ``wss://`` (TLS with :class:`~.TlsOptions`: its
  ``context``, else ``ca_file``, ``EDGE_RELAY_CA_FILE``, else the system roots; the
  host name is checked), path and query kept, checked ``Sec-WebSocket-Accept``; a
  certificate that does not verify raises :class:`~.TlsVerifyError` (one line, the
  reason), another TLS failure ``ConnectError``, a non-101 answer
  :class:`~.RefusedError` (``retry_hint`` from ``X-Retry-After-Ms`` on a 503), a bad
  101 ``ConnectError``, all within ``connect_timeout`` (else ``TimeoutError``).
- Messages: binary messages are frames of the edge protocol; text messages are
  yielded by ``messages()`` as ``str`` and skipped by ``recv()``.  One reader at a
  time: ``recv()`` and ``messages()`` must not wait concurrently.  A server
  frame that breaks RFC 6455 (masked, oversized: over ``max_size`` bytes, ...)
  ends the link: we send close 1002/1007/1009 and drop the TCP connection;
  ``close_code`` is then None (the edge sent no close frame).
- Flow control: past ``max_queue`` unread messages the socket is no longer
  read (TCP pushes back to the edge) until the reader catches up to a quarter.
- Keepalive: with ``ping_interval``, a ping every ``ping_interval`` s; no pong
  within ``ping_timeout`` ends the link like a cut (close_code None): a
  half-open link is noticed within ``ping_interval + ping_timeout``.  (Not while
  reading is paused by flow control: the pong may be unread behind the backlog,
  so the wait goes on until reading resumes.)
- Close: ``close_code``/``close_reason`` are those of the edge's close frame
  (1005 for an empty one), None/"" when the link was lost without one.
  ``messages()`` ends normally after a close handshake with 1000/1001/1005 from
  the edge, else raises :class:`~.LinkClosed`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

from ..errors import ConnectError
from .base import LinkClosed, RefusedError, TlsOptions, TlsVerifyError, client_context
from .ws_frames import (
    CLOSE_NO_STATUS,
    OP_BINARY,
    OP_PING,
    OP_PONG,
    Close,
    FrameReader,
    Ping,
    Pong,
    WsProtocolError,
    encode_close,
    encode_frame,
)
from .ws_handshake import (
    MAX_HEAD,
    HandshakeError,
    build_request,
    check_upgrade,
    make_key,
    parse_response,
)

__all__ = ["CLOSE_TIMEOUT", "MAX_QUEUE", "MAX_SIZE", "WsLink"]

#: Largest message accepted from the edge (the SDK codec's own frame limit).
MAX_SIZE = 16 * 1024 * 1024
#: Unread messages after which the socket stops being read.
MAX_QUEUE = 4096
#: Seconds ``close()`` waits for the edge to answer the close frame.
CLOSE_TIMEOUT = 1.0
#: Close codes after which ``messages()`` ends without raising.
_NORMAL = (1000, 1001, CLOSE_NO_STATUS)

_CONNECTING, _OPEN, _CLOSING, _CLOSED = range(4)


class WsLink(asyncio.Protocol):
    """A :class:`~client_sdk.transport.Link` over one WebSocket connection.

    It is its own :class:`asyncio.Protocol` (the ``connection_*``/``data_received``
    callbacks are for the event loop only); make one with :meth:`open`.
    """

    transport = "ws"

    def __init__(self, url: str, key: str, max_size: int = MAX_SIZE,
                 max_queue: int = MAX_QUEUE) -> None:
        self.url = url
        self._key = key
        self._tx: asyncio.Transport | None = None
        self._state = _CONNECTING
        self._head = bytearray()
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = FrameReader(max_size)
        self._queue: deque[bytes | str] = deque()
        self._max_queue = max(1, max_queue)
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._code: int | None = None
        self._reason = ""
        self._why = ""  # why the link ended, when the edge did not say
        # Keepalive (timers, no task: a process may hold thousands of links):
        # (interval, timeout), the timer armed, and the payload of the unanswered ping.
        self._ka: tuple[float, float] = (0.0, 0.0)
        self._ka_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None

    @classmethod
    async def open(cls, url: str, *, connect_timeout: float, ping_interval: float | None,
                   ping_timeout: float | None, tls: TlsOptions | None = None,
                   max_size: int = MAX_SIZE, max_queue: int = MAX_QUEUE) -> WsLink:
        """Connect and upgrade (see the module docstring for the errors)."""
        parts = urlsplit(url)
        secure = parts.scheme.lower() == "wss"
        host = parts.hostname
        if not host or parts.scheme.lower() not in ("ws", "wss"):
            raise ValueError(f"{url!r}: a WebSocket URL is ws://host[:port]/path")
        port = parts.port or (443 if secure else 80)
        hostport = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = make_key()
        # Before connecting: an unreadable CA file is its own error, not a handshake's.
        ctx = client_context(tls or TlsOptions()) if secure else None
        loop = asyncio.get_running_loop()
        link = cls(url, key, max_size, max_queue)
        try:
            async with asyncio.timeout(connect_timeout):
                try:
                    await loop.create_connection(lambda: link, host, port, ssl=ctx)
                except ssl.SSLCertVerificationError as exc:
                    raise TlsVerifyError(url, exc.verify_message or exc.reason or str(exc)
                                         ) from exc
                except ssl.SSLError as exc:
                    raise ConnectError(f"{url}: TLS handshake failed: {exc.reason or exc} "
                                       "(does the edge serve wss:// on that port?)") from exc
                assert link._tx is not None
                link._tx.write(build_request(hostport, target, key))
                await link._opened
        except BaseException:
            link.abort()
            raise
        if ping_interval and not link._ended:
            link._ka = (ping_interval, ping_timeout or ping_interval)
            link._ka_timer = loop.call_later(ping_interval, link._ping)
        return link

    # -- asyncio.Protocol (event loop callbacks) -----------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but behave as one.
        self._tx = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        if not self._opened.done():
            # An edge that serves wss:// drops a plain ws:// client without a word.
            hint = "" if self.url.lower().startswith("wss:") else " (is it a wss:// port?)"
            self._opened.set_exception(ConnectionError(
                f"{self.url}: connection lost during the WebSocket handshake{hint}"))
        self._end(self._why or (f"connection lost: {exc}" if exc else "connection lost"))
        if not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return  # after the close frame or an error: nothing more is read
        if self._state == _CONNECTING:
            rest = self._handshake(data)
            if not rest:
                return
            data = rest
        error: WsProtocolError | None = None
        try:
            events = self._reader.feed(data)
        except WsProtocolError as exc:
            events, error = exc.events, exc  # deliver what came before the violation
        q = self._queue
        n = len(q)
        for ev in events:
            t = type(ev)
            if t is bytes or t is str:
                q.append(ev)  # type: ignore[arg-type]
            else:
                self._control(ev)  # type: ignore[arg-type]
                if self._ended:
                    break
        if len(q) != n:
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)
            if len(q) > self._max_queue and not self._paused and self._tx is not None:
                self._paused = True
                self._tx.pause_reading()
        if error is not None and not self._ended:
            self._fail(error.code, str(error))

    def _handshake(self, data: bytes) -> bytes:
        """Collect the response head; the bytes after it (frames) are returned."""
        head = self._head
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD:
                self._refuse(ConnectError(f"{self.url}: response head over {MAX_HEAD} bytes"))
            return b""
        try:
            resp = parse_response(bytes(head[:end]))
            if resp.status != 101:
                hint = resp.headers.get("x-retry-after-ms", "")
                self._refuse(RefusedError(
                    f"{self.url}: refused with HTTP {resp.status}",
                    int(hint) / 1000.0 if resp.status == 503 and hint.isdigit() else 0.0))
                return b""
            check_upgrade(resp, self._key)
        except HandshakeError as exc:
            self._refuse(ConnectError(f"{self.url}: bad WebSocket handshake: {exc}"))
            return b""
        rest = bytes(head[end + 4:])
        self._head = bytearray()
        self._state = _OPEN
        self._opened.set_result(None)
        return rest

    def _refuse(self, exc: Exception) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)
        self._state = _CLOSED
        self._end(str(exc))
        if self._tx is not None:
            self._tx.close()

    def _control(self, ev: Ping | Pong | Close) -> None:
        tx = self._tx
        if type(ev) is Ping:
            if self._state == _OPEN and tx is not None:
                tx.write(encode_frame(OP_PONG, ev.payload))
        elif type(ev) is Pong:
            if (self._ping_payload is not None and ev.payload == self._ping_payload
                    and not self._ended):
                self._ping_payload = None  # answered: the next ping in an interval
                if self._ka_timer is not None:
                    self._ka_timer.cancel()
                self._ka_timer = asyncio.get_running_loop().call_later(self._ka[0],
                                                                       self._ping)
        else:
            assert isinstance(ev, Close)
            if self._ended:
                return
            self._code, self._reason = ev.code, ev.reason
            if self._state == _OPEN and tx is not None:
                tx.write(encode_close(ev.code))  # echo the code (RFC 6455 §5.5.1)
            self._state = _CLOSING
            self._end("closed by the edge")
            if tx is not None:
                tx.close()  # both close frames are out: the TCP connection can go

    def _fail(self, code: int, why: str) -> None:
        """The edge broke the protocol: say so with ``code`` and drop the connection."""
        tx = self._tx
        self._why = f"WebSocket protocol error: {why}"
        if self._state == _OPEN and tx is not None:
            tx.write(encode_close(code, why))
        self._state = _CLOSING
        self._end(self._why)
        if tx is not None:
            tx.close()

    def _end(self, why: str) -> None:
        """No more messages will arrive (the queued ones are still delivered)."""
        if self._ended:
            return
        self._ended = True
        if not self._why:
            self._why = why
        if self._ka_timer is not None:
            self._ka_timer.cancel()
            self._ka_timer = None
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _ping(self) -> None:
        """Keepalive timer: send a PING, and give its PONG ``timeout`` seconds."""
        self._ka_timer = None
        if self._ended or self._state != _OPEN or self._tx is None:
            return
        self._ping_payload = payload = os.urandom(4)
        self._tx.write(encode_frame(OP_PING, payload))
        self._ka_timer = asyncio.get_running_loop().call_later(self._ka[1], self._ping_due)

    def _ping_due(self) -> None:
        """The PONG did not come in time: a half-open link (network cut, frozen edge)
        ends like a lost connection.  While reading is paused (the application is
        behind) the pong may sit unread in the socket: judge only once it resumed."""
        self._ka_timer = None
        if self._ended:
            return
        if self._paused:
            self._ka_timer = asyncio.get_running_loop().call_later(self._ka[1],
                                                                   self._ping_due)
            return
        self._why = "keepalive ping timeout"
        if self._state == _OPEN and self._tx is not None:
            self._tx.write(encode_close(1011, "keepalive ping timeout"))
        self.abort()

    # -- Link -----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write one binary message (dropped once the link is closing; never blocks)."""
        if self._state == _OPEN and self._tx is not None:
            self._tx.write(encode_frame(OP_BINARY, data))

    send_unreliable = send

    def _take(self) -> bytes | str:
        m = self._queue.popleft()
        if self._paused and len(self._queue) <= self._max_queue // 4:
            self._paused = False
            if self._tx is not None and not self._tx.is_closing():
                self._tx.resume_reading()
        return m

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def recv(self) -> bytes:
        """Next binary message (text messages are skipped); :class:`LinkClosed` at the end."""
        while True:
            while self._queue:
                m = self._take()
                if type(m) is bytes:
                    return m
            if self._ended:
                raise LinkClosed(self._code, self._reason or self._why)
            await self._wait()

    async def messages(self) -> AsyncIterator[bytes | str]:
        """Messages until the end: returns after a normal close, else raises
        :class:`LinkClosed`."""
        q = self._queue
        new_future = asyncio.get_running_loop().create_future
        while True:
            while q:
                yield self._take() if self._paused else q.popleft()
            if self._ended:
                if self._code in _NORMAL:
                    return
                raise LinkClosed(self._code, self._reason or self._why)
            # Inlined _wait(): this is the once-per-socket-read hot path.
            self._waiter = w = new_future()
            try:
                await w
            finally:
                self._waiter = None

    @property
    def close_code(self) -> int | None:
        """Code of the edge's close frame (1005: it had none); None if none arrived."""
        return self._code

    @property
    def close_reason(self) -> str:
        """Reason of the edge's close frame ("" if none arrived)."""
        return self._reason

    def buffered(self) -> int:
        """Bytes in the TCP (or TLS) transport's write buffer."""
        tx = self._tx
        return tx.get_write_buffer_size() if tx is not None and self._state != _CLOSED else 0

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Closing handshake: send ``code``, wait up to :data:`CLOSE_TIMEOUT` for
        the edge's answer and the end of the TCP connection, else drop it."""
        tx = self._tx
        if self._state == _OPEN and tx is not None:
            self._state = _CLOSING
            tx.write(encode_close(code, reason))
        if tx is None or self._lost.done():
            self._end("closed")
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self._lost)
        except TimeoutError:
            self._why = self._why or "no answer to our close frame"
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once, without a close frame."""
        self._state = _CLOSED
        if not self._opened.done():
            self._opened.cancel()
        self._end(self._why or "aborted")
        if self._tx is not None:
            self._tx.abort()
