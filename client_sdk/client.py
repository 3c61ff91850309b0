"""The asyncio client.

>>> client = await connect(["ws://127.0.0.1:8701", "ws://127.0.0.1:8702"], token)
>>> client = await connect("quic://127.0.0.1:8711", token)  # QUIC: same API
>>> sub = await client.join("lobby")
>>> await client.publish("lobby", b"hello")
>>> async for msg in sub:
...     print(msg.sender, msg.payload)

Contract: a :class:`Client` keeps one connection to one edge.  When it drops
with a retryable code (see :mod:`client_sdk.protocol.codes`) the client
reconnects with full-jitter backoff, walking its URL list, and re-joins its
rooms by *resuming* its session: the edge (the same or another one) replays
what each room missed from the room's history and reports per room whether
the recovery is complete (:class:`RecoveryEvent`).  Reliable publishes wait
in the outbox until the edge says they are durable and are re-sent after a
reconnect with the same idempotency key, so the application sees each
reliable message exactly once, or is told (``recovered=False``) what it
missed.  Other requests in flight fail with :class:`ConnectionLostError`.  A
non-retryable close (bad token, ...) ends the client: iterators stop and calls
raise :class:`ClientClosedError`.

Transports (:mod:`client_sdk.transport`): ``ws://``/``wss://`` URLs use
WebSocket, ``quic://`` URLs QUIC, where ``publish(..., reliable=False)`` goes
as a datagram.  Each edge's WELCOME names its URL on the other transport; when
a QUIC edge cannot be reached (UDP blocked) the client tries that edge's
WebSocket URL next, and vice versa.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .backoff import Backoff
from .errors import (
    ClientClosedError,
    ConnectError,
    ConnectionLostError,
    EdgeRelayError,
    RequestTimeoutError,
    error_for_code,
)
from .outbox import Outbox, OutboxItem
from .probe import rank_by_rtt
from .protocol import (
    JOIN_NO_ECHO,
    JOIN_PRESENCE,
    PROTOCOL_VERSION,
    Ack,
    Decoder,
    Error,
    ErrorCode,
    Frame,
    Handoff,
    Hello,
    Join,
    Joined,
    Leave,
    Limits,
    Member,
    Message,
    Neighbours,
    Ping,
    Pong,
    PresenceJoin,
    PresenceLeave,
    PresenceList,
    PresenceMembers,
    ProtocolError,
    Publish,
    Resumed,
    Retry,
    Welcome,
    encode,
    retry_for_close,
)
from .retry import publish_retryable
from .subscription import PresenceEvent, RecoveryEvent, Subscription
from .transport import Link, LinkClosed, RefusedError, TlsOptions, open_link, scheme_of

__all__ = ["Client", "Position", "ReceivedMessage", "connect"]

log = logging.getLogger("client_sdk")

#: A message delivered to the application (the protocol's MESSAGE frame).
ReceivedMessage = Message


@dataclass(frozen=True, slots=True)
class Position:
    """Position of a reliable message in its room: ``(epoch, seq)``."""

    epoch: int
    seq: int


_INBOUND_LIMITS = Limits(max_frame_bytes=16 * 1024 * 1024, max_presence_list=100_000)


class Client:
    """A connection to the edge network.  Create with :func:`connect`."""

    def __init__(self, urls: Sequence[str], token: str, *, name: str = "",
                 reconnect: bool = True, request_timeout: float = 10.0,
                 connect_timeout: float = 5.0, backoff_base: float = 0.5,
                 backoff_cap: float = 20.0, max_send_buffer: int = 4 * 1024 * 1024,
                 ping_interval: float | None = 2.5, ping_timeout: float | None = 2.5,
                 tls: TlsOptions | None = None) -> None:
        if not urls:
            raise ValueError("at least one URL is required")
        self.urls = list(urls)
        self.token = token
        self.name = name
        self.reconnect = reconnect
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.max_send_buffer = max_send_buffer
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.tls = tls or TlsOptions()
        #: The same edge on the other transport (ws URL <-> quic URL), from WELCOMEs.
        self._alternates: dict[str, str] = {}
        self._prefer_quic = scheme_of(self.urls[0]) == "quic"
        #: Other edges announced by the current edge (WELCOME, NEIGHBOURS), best first.
        self.neighbours: list[str] = []
        #: Completed make-before-break moves (HANDOFF from a draining edge).
        self.handoffs = 0
        #: Messages a handed-off client took from its *old* connection after switching
        #: to the new one (the overlap of make before break; copies are dropped).
        self.handoff_overlap_messages = 0
        self._handing_off = False
        #: Rooms not yet resumed on the connection a handoff moved to, and the event
        #: set when none is left (the old connection is closed then).
        self._unresumed: set[str] = set()
        self._all_resumed = asyncio.Event()
        self._retiring: set[Link] = set()
        self._retry_hint = 0.0
        self._attempt = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.session_id = ""
        self.edge_id = ""
        self.url = ""
        self.server_info: dict[str, object] = {}
        self.reconnects = 0
        self.rtt: float | None = None
        self.errors: list[tuple[int, str]] = []
        self.on_error: Callable[[int, str], None] | None = None
        self.on_reconnect: Callable[[Client], None] | None = None
        self.on_recovery: Callable[[RecoveryEvent], None] | None = None
        #: Called after each make-before-break move to another edge (HANDOFF).
        self.on_handoff: Callable[[Client], None] | None = None
        self.recoveries: list[RecoveryEvent] = []
        #: Frames this class does not handle itself (device frames: see client_sdk.device).
        self.on_other_frame: Callable[[Frame], None] | None = None
        self._outbox = Outbox()
        self._raw_futures: dict[int, asyncio.Future[tuple[int, int]]] = {}
        self._resume_token = ""
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._link: Link | None = None
        self._req_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._subs: dict[str, Subscription] = {}
        self._decoder = Decoder(_INBOUND_LIMITS)
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed: ClientClosedError | None = None

    # -- connection management ----------------------------------------------

    def _resume_map(self) -> dict[str, object] | None:
        if not self.session_id or not self._resume_token:
            return None
        # "att" orders this client's connection attempts: if an abandoned attempt
        # completes late on the edge, it must not displace the newer connection.
        return {"sid": self.session_id, "rt": self._resume_token, "att": self._attempt,
                "rooms": {r: [s.flags, *s.position] for r, s in self._subs.items()}}

    async def _open(self, url: str) -> tuple[Link, Welcome]:
        self._attempt += 1
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that races its timeout, leaving a reconnect loop running.
            async with asyncio.timeout(self.connect_timeout):
                # Client-side keepalive: a half-open link (network cut, frozen
                # edge) is noticed within ping_interval + ping_timeout.
                link = await open_link(url, connect_timeout=self.connect_timeout,
                                       ping_interval=self.ping_interval,
                                       ping_timeout=self.ping_timeout, tls=self.tls)
        except RefusedError as exc:
            self._retry_hint = max(self._retry_hint, exc.retry_hint)
            raise
        except ValueError as exc:
            raise InvalidURI(url, str(exc)) from exc
        try:
            link.send(encode(Hello(PROTOCOL_VERSION, self.token, self.name,
                                   self._resume_map())))
            async with asyncio.timeout(self.connect_timeout):
                raw = await link.recv()
            frame = self._decoder.decode(raw)
            if not isinstance(frame, Welcome):
                raise ConnectError(f"{url}: expected WELCOME, got {type(frame).__name__}")
            return link, frame
        except LinkClosed as exc:
            code, reason = exc.code, exc.reason
            if code is not None and retry_for_close(code) is Retry.NEVER:
                raise error_for_code(code, reason or "rejected") from exc
            if code == ErrorCode.OVERLOADED and "retry in " in reason:
                tail = reason.rsplit("retry in ", 1)[1].removesuffix(" ms")
                if tail.isdigit():
                    self._retry_hint = max(self._retry_hint, int(tail) / 1000.0)
            raise ConnectError(f"{url}: closed during handshake ({code} {reason})") from exc
        except BaseException:
            with contextlib.suppress(Exception):
                await link.close()
            raise

    def _candidates(self, elsewhere: bool) -> list[str]:
        """Edges to try, best first: the current one (unless told to go elsewhere),
        the neighbours the edge announced, then the configured URLs."""
        order = [] if elsewhere or not self.url else [self.url]
        order += self.neighbours + self.urls
        if elsewhere and self.url:
            order.append(self.url)  # still worth a try after all the others
        if self._prefer_quic:
            # Each edge over QUIC first, then over WebSocket: a client whose UDP
            # is blocked falls back.  (WebSocket clients never try QUIC: a dead
            # or filtered UDP port costs a timeout, a dead TCP port nothing.)
            expanded: list[str] = []
            for u in order:
                alt = self._alternates.get(u)
                if alt is None:
                    expanded.append(u)
                elif scheme_of(u) == "quic":
                    expanded += [u, alt]
                else:
                    expanded += [alt, u]
            order = expanded
        seen: set[str] = set()
        return [u for u in order if not (u in seen or seen.add(u))]  # type: ignore[func-returns-value]

    def _adopt(self, link: Link, url: str, welcome: Welcome) -> None:
        self._link = link
        self.url = url
        self.session_id = welcome.session_id
        self.edge_id = welcome.edge_id
        self.server_info = dict(welcome.info)
        rt = welcome.info.get("resume_token")
        self._resume_token = rt if isinstance(rt, str) else ""
        nb = welcome.info.get("neighbours")
        if isinstance(nb, list):
            self.neighbours = [u for u in nb if isinstance(u, str)]
        ws_url, quic_url = welcome.info.get("ws_url"), welcome.info.get("quic_url")
        if isinstance(ws_url, str) and isinstance(quic_url, str) and ws_url and quic_url:
            self._alternates[ws_url] = quic_url
            self._alternates[quic_url] = ws_url

    @property
    def transport(self) -> str:
        """Transport of the current connection: ``"ws"`` or ``"quic"``."""
        return self._link.transport if self._link is not None else ""

    async def _connect_any(self, candidates: list[str] | None = None) -> None:
        """Try each candidate once, in order; adopt the first that welcomes us."""
        errors = []
        for url in candidates if candidates is not None else self.urls:
            try:
                link, welcome = await self._open(url)
            except EdgeRelayError as exc:
                if getattr(exc, "code", None) is not None and retry_for_close(
                        getattr(exc, "code", 0)) is Retry.NEVER:
                    raise
                errors.append(f"{url}: {exc}")
                continue
            except (OSError, TimeoutError, InvalidHandshake, ProtocolError) as exc:
                errors.append(f"{url}: {exc or type(exc).__name__}")
                continue
            except InvalidURI as exc:
                raise ConnectError(f"invalid URL {url!r}") from exc
            self._adopt(link, url, welcome)
            return
        raise ConnectError("could not connect to any edge: " + "; ".join(errors))

    async def _start(self) -> None:
        await self._connect_any()
        self._connected.set()
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="client-run")

    async def _run(self) -> None:
        while True:
            link = self._link
            assert link is not None
            try:
                async for raw in link.messages():
                    if isinstance(raw, bytes):
                        if link is self._link:
                            self._on_frame(raw)
                        else:
                            self._on_retiring_frame(raw)
            except (ConnectionClosed, LinkClosed):
                pass
            code, reason = link.close_code, link.close_reason
            if link is not self._link:
                return  # handed off: another runner reads the new connection
            self._connected.clear()
            self._outbox.unbind_all()
            self._fail_pending(ConnectionLostError(f"connection lost ({code} {reason})"))
            if self._closed is not None:
                return
            retry = retry_for_close(code)
            if retry is Retry.NEVER or not self.reconnect:
                self._shutdown(ClientClosedError(f"closed by edge: {code} {reason}", code))
                return
            # A link that died without the edge saying why (no close frame, or our
            # keepalive gave up) may mean a dead or frozen edge: try the neighbours
            # first.  A frozen edge still accepts TCP and would hold the handshake
            # until connect_timeout (measured: 7.8 s to be served again, not 1-2 s).
            elsewhere = retry is Retry.RECONNECT_ELSEWHERE or code in (None, 1006, 1011)
            if not await self._reconnect_loop(elsewhere=elsewhere):
                return

    async def _reconnect_loop(self, elsewhere: bool) -> bool:
        while self._closed is None:
            delay = self._backoff.next_delay()
            if self._retry_hint:
                # The edge asked us to wait (connection-rate limit): honour it, jittered.
                delay = max(delay, self._retry_hint * random.uniform(1.0, 2.0))
                self._retry_hint = 0.0
            await asyncio.sleep(delay)
            try:
                await self._connect_any(self._candidates(elsewhere))
            except (ConnectError, OSError, TimeoutError):
                elsewhere = True
                continue
            except EdgeRelayError as exc:  # auth rejected on reconnect
                self._shutdown(ClientClosedError(f"reconnect refused: {exc}"))
                return False
            self._backoff.reset()
            self.reconnects += 1
            self._connected.set()
            # The edge re-joins our rooms from the resume map (RESUMED frames
            # follow); publishes not yet durable go out again, in order.
            self._resend_outbox()
            if self.on_reconnect is not None:
                self.on_reconnect(self)
            return True
        return False

    @staticmethod
    async def _close_quietly(link: Link, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await link.close(code, reason)

    async def _handoff(self, url: str, deadline_ms: int) -> None:
        """Make before break: resume on ``url`` while the old connection still
        delivers, switch to it, and close the old one (code 4101) only once the new
        edge has resumed every room (or ``deadline_ms`` has passed): until then
        messages arrive on both and copies are dropped by position."""
        if self._handing_off or self._closed is not None:
            return
        self._handing_off = True
        old = self._link
        try:
            for target in [url, *self._candidates(elsewhere=True)]:
                if target == self.url:
                    continue
                try:
                    link, welcome = await self._open(target)
                except (EdgeRelayError, OSError, TimeoutError, InvalidHandshake,
                        ProtocolError):
                    continue
                if self._closed is not None:
                    await link.close()
                    return
                self._adopt(link, target, welcome)
                self.handoffs += 1
                if self.on_handoff is not None:
                    self.on_handoff(self)
                # Requests, acks and everything but messages now go over the new
                # connection; the old one's runner keeps reading it and passes on
                # only its messages (the new edge replays everything after the
                # positions our HELLO carried, so nothing depends on them, but until
                # the new edge has resumed the rooms they are the freshest copies).
                self._unresumed = set(self._subs)
                self._all_resumed.clear()
                if not self._unresumed:
                    self._all_resumed.set()
                self._fail_pending(ConnectionLostError("moved to another edge; retry"))
                self._outbox.unbind_all()
                if self._runner is not None:
                    if self._connected.is_set():
                        # Still reading the old connection: let it run out.
                        self._tasks.add(self._runner)
                        self._runner.add_done_callback(self._tasks.discard)
                    else:  # the old connection died meanwhile: stop its reconnect loop
                        self._runner.cancel()
                        self._connected.set()
                self._runner = asyncio.get_running_loop().create_task(self._run(),
                                                                      name="client-run")
                self._resend_outbox()
                if old is not None:
                    self._retiring.add(old)
                    self._background(self._retire(old, deadline_ms / 1000.0))
                return
            # No neighbour took us: the old edge will close us (4100) and the
            # reconnect loop takes over from there.
        finally:
            self._handing_off = False

    #: Longest overlap of a handoff: the old connection is closed after this even if
    #: the new edge has not resumed every room (it replays them anyway).
    HANDOFF_OVERLAP_MAX = 5.0

    async def _retire(self, old: Link, deadline: float) -> None:
        """Close the connection a handoff left once the new one has resumed every room
        (RESUMED for each), or after ``deadline`` s (capped), whichever comes first."""
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(max(deadline, 0.0), self.HANDOFF_OVERLAP_MAX)):
                    await self._all_resumed.wait()
        finally:
            self._retiring.discard(old)
            await self._close_quietly(old, 4101, "moved")

    def _on_retiring_frame(self, raw: bytes) -> None:
        """A frame on a connection a handoff left: only its messages still count (the
        new connection carries requests, acks, pings and control frames)."""
        try:
            f = self._decoder.decode(raw)
        except ProtocolError:
            return
        if type(f) is Message:
            assert isinstance(f, Message)
            sub = self._subs.get(f.room)
            if sub is not None:
                before = sub.received
                sub._deliver(f)
                self.handoff_overlap_messages += sub.received - before

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task the client keeps a reference to until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resend_outbox(self) -> None:
        for item in self._outbox.pending():
            if not item.req_id:
                try:
                    self._send_item(item)
                except EdgeRelayError:
                    return

    def _send_item(self, item: OutboxItem) -> None:
        req_id = next(self._req_ids)
        self._send(encode(Publish(req_id, item.room, item.payload, True, item.idem)))
        self._outbox.bind(item, req_id)

    def _shutdown(self, exc: ClientClosedError) -> None:
        self._closed = exc
        self._connected.set()  # wake waiters so they see the closed state
        self._fail_pending(exc)
        self._outbox.fail_all(exc)
        for sub in self._subs.values():
            sub._end(exc)

    def _fail_pending(self, exc: EdgeRelayError) -> None:
        for fut in list(self._pending.values()) + list(self._pings.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        self._pings.clear()

    async def close(self) -> None:
        """Close the connection; subscriptions end.  Safe to call twice."""
        if self._closed is None:
            self._shutdown(ClientClosedError("client closed"))
        if self._link is not None:
            with contextlib.suppress(Exception):
                await self._link.close()
        for old in list(self._retiring):
            await self._close_quietly(old, 1000, "")
        self._retiring.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while a connection to an edge is open."""
        return self._connected.is_set() and self._closed is None

    # -- inbound --------------------------------------------------------------

    def _on_frame(self, raw: bytes) -> None:
        try:
            f = self._decoder.decode(raw)
        except ProtocolError as exc:
            log.warning("undecodable frame from edge: %s", exc)
            return
        t = type(f)
        if t is Message:
            assert isinstance(f, Message)
            sub = self._subs.get(f.room)
            if sub is not None:
                sub._deliver(f)
        elif t is Ack:
            assert isinstance(f, Ack)
            if not self._outbox.ack(f.req_id, f.epoch, f.seq):
                fut = self._pending.pop(f.req_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(f)
        elif t in (Joined, PresenceMembers):
            fut = self._pending.pop(f.req_id, None)  # type: ignore[union-attr]
            if fut is not None and not fut.done():
                fut.set_result(f)
        elif t is Error:
            assert isinstance(f, Error)
            if f.req_id and self._outbox.owns(f.req_id):
                if publish_retryable(f.code):
                    item = self._outbox.retry_later(f.req_id)
                    if item is not None:
                        asyncio.get_running_loop().call_later(
                            self._backoff.base, self._retry_item, item.idem)
                else:
                    self._outbox.fail(f.req_id, error_for_code(f.code, f.message))
                return
            if f.req_id:
                fut = self._pending.pop(f.req_id, None)
                if fut is not None and not fut.done():
                    fut.set_exception(error_for_code(f.code, f.message))
                    return
            self.errors.append((f.code, f.message))
            del self.errors[:-100]
            if self.on_error is not None:
                self.on_error(f.code, f.message)
        elif t is Pong:
            assert isinstance(f, Pong)
            pfut = self._pings.pop(f.stamp, None)
            if pfut is not None and not pfut.done():
                pfut.set_result(time.perf_counter())
        elif t is Ping:
            assert isinstance(f, Ping)
            self._send(encode(Pong(f.stamp)))
        elif t is Handoff:
            assert isinstance(f, Handoff)
            self._background(self._handoff(f.url, f.deadline_ms))
        elif t is Neighbours:
            assert isinstance(f, Neighbours)
            self.neighbours = list(f.urls)
        elif t is Resumed:
            assert isinstance(f, Resumed)
            ev = RecoveryEvent(f.room, f.recovered, (f.epoch, f.seq), f.replayed, f.reason,
                               dict(f.info))
            self.recoveries.append(ev)
            del self.recoveries[:-1000]
            if self._unresumed:
                self._unresumed.discard(f.room)
                if not self._unresumed:
                    self._all_resumed.set()
            sub = self._subs.get(f.room)
            if sub is not None:
                sub._recovered(ev)
            if self.on_recovery is not None:
                self.on_recovery(ev)
        elif t in (PresenceJoin, PresenceLeave):
            assert isinstance(f, (PresenceJoin, PresenceLeave))
            sub = self._subs.get(f.room)
            if sub is not None:
                sub._presence(PresenceEvent(f.room, isinstance(f, PresenceJoin), f.member))
        elif self.on_other_frame is not None:
            self.on_other_frame(f)

    # -- outbound -------------------------------------------------------------

    def _send(self, data: bytes, reliable: bool = True) -> None:
        link = self._link
        if self._closed is not None:
            raise self._closed
        if link is None or not self._connected.is_set():
            raise ConnectionLostError("not connected")
        # Synchronous write; see max_send_buffer for the bound.
        if reliable:
            link.send(data)
        else:
            link.send_unreliable(data)

    async def _wait_writable(self) -> None:
        link = self._link
        while link is not None and link.buffered() > self.max_send_buffer:  # noqa: ASYNC110 (no drain event)
            await asyncio.sleep(0.001)

    async def _request(self, frame: Join | Leave | PresenceList | Publish) -> Frame:
        if self._closed is not None:
            raise self._closed
        if not self._connected.is_set():
            async with asyncio.timeout(self.request_timeout):
                await self._connected.wait()
        req_id = next(self._req_ids)
        out = _with_req_id(frame, req_id)
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            self._send(encode(out))
            async with asyncio.timeout(self.request_timeout):
                return await fut
        except TimeoutError as exc:
            raise RequestTimeoutError(f"no answer to {type(frame).__name__} in "
                                      f"{self.request_timeout:g} s") from exc
        finally:
            self._pending.pop(req_id, None)

    # -- public API ------------------------------------------------------------

    async def join(self, room: str, *, presence: bool = False, echo: bool = True,
                   on_message: Callable[[Message], None] | None = None,
                   queue_size: int = 10_000) -> Subscription:
        """Join ``room`` and return its :class:`Subscription`.

        With ``on_message`` the callback runs synchronously for each message
        (fastest; the subscription's iterator then yields nothing).  Otherwise
        iterate the subscription with ``async for``.  ``presence=True`` also
        delivers presence join/leave events (``sub.presence_events()``);
        ``echo=False`` skips this client's own publishes.
        """
        flags = (JOIN_PRESENCE if presence else 0) | (0 if echo else JOIN_NO_ECHO)
        sub = self._subs.get(room)
        if sub is None:
            sub = Subscription(self, room, flags, on_message, queue_size)
            self._subs[room] = sub
        try:
            joined = await self._request(Join(0, room, flags))
        except BaseException:
            self._subs.pop(room, None)
            raise
        assert isinstance(joined, Joined)
        sub.position = (joined.epoch, joined.seq)
        return sub

    async def leave(self, room: str) -> None:
        """Leave ``room``; its subscription's iterator ends."""
        sub = self._subs.pop(room, None)
        if sub is not None:
            sub._end(None)
        await self._request(Leave(0, room))

    def _retry_item(self, idem: int) -> None:
        for item in self._outbox.pending():
            if item.idem == idem and not item.req_id and self._connected.is_set():
                with contextlib.suppress(EdgeRelayError):
                    self._send_item(item)
                return

    async def publish(self, room: str, payload: bytes, *, reliable: bool = True,
                      timeout: float | None = None) -> Position | None:
        """Publish ``payload`` to ``room`` (joined first).

        Reliable: the message goes through the outbox; this returns its
        :class:`Position` once the edge confirms it is durable, re-sending it
        across reconnects as needed.  ``timeout`` (seconds, default: wait as
        long as the client lives) gives up: the publish is then dropped from
        the outbox and :class:`RequestTimeoutError` raised (it may still have
        been delivered).  Unreliable (latest-value updates): sent at once,
        returns ``None``; dropped if not connected.
        """
        await self._wait_writable()
        if not reliable:
            with contextlib.suppress(ConnectionLostError):
                self.publish_nowait(room, payload, reliable=False)
            return None
        fut = self.publish_nowait(room, payload)
        assert fut is not None
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError as exc:
            for item in self._outbox.pending():
                if item.future is self._raw_futures.get(id(fut)):
                    self._outbox.discard(item.idem)
            raise RequestTimeoutError(f"publish not confirmed within {timeout:g} s") from exc

    def publish_nowait(self, room: str, payload: bytes, *,
                       reliable: bool = True) -> asyncio.Future[Position] | None:
        """Queue a publish without awaiting (game loops, load generators).

        Reliable: returns a future resolved with the position once durable;
        the message is kept in the outbox and sent (again) whenever connected.
        Unreliable: sent now if connected, returns ``None``.
        """
        if self._closed is not None:
            raise self._closed
        if not reliable:
            self._check_size(room, payload)
            self._send(encode(Publish(0, room, payload, False, 0)), reliable=False)
            return None
        if self._outbox.full():
            raise EdgeRelayError("outbox full: too many unconfirmed publishes")
        self._check_size(room, payload)
        loop = asyncio.get_running_loop()
        raw: asyncio.Future[tuple[int, int]] = loop.create_future()
        item = self._outbox.add(room, payload, raw)
        if self._connected.is_set():
            with contextlib.suppress(ConnectionLostError):
                self._send_item(item)
        out: asyncio.Future[Position] = loop.create_future()
        self._raw_futures[id(out)] = raw

        def done(f: asyncio.Future[tuple[int, int]]) -> None:
            self._raw_futures.pop(id(out), None)
            exc = None if f.cancelled() else f.exception()  # retrieved even if unused
            if out.done():
                return
            if f.cancelled():
                out.cancel()
            elif exc is not None:
                out.set_exception(exc)
            else:
                out.set_result(Position(*f.result()))

        raw.add_done_callback(done)
        return out

    def _check_size(self, room: str, payload: bytes) -> None:
        """Refuse locally what the edge would refuse (4413) instead of waiting on it."""
        limit = self.server_info.get("max_frame_bytes")
        # A PUBLISH frame is payload + room + at most 32 bytes of framing: only a
        # publish near the limit is worth encoding to measure (not every one).
        if isinstance(limit, int) and len(payload) + len(room) * 4 + 32 > limit:
            size = len(encode(Publish(2**32, room, payload, True, 2**32)))
            if size > limit:
                raise error_for_code(ErrorCode.FRAME_TOO_LARGE,
                                     f"publish of {size} bytes exceeds the edge's "
                                     f"limit of {limit} bytes")

    @property
    def outbox_size(self) -> int:
        """Reliable publishes not yet confirmed durable."""
        return len(self._outbox)

    async def presence(self, room: str) -> list[Member]:
        """Members of ``room`` across all edges."""
        reply = await self._request(PresenceList(0, room))
        assert isinstance(reply, PresenceMembers)
        return list(reply.members)

    async def ping(self) -> float:
        """Measure the round-trip time to the edge, in seconds (also kept in ``rtt``)."""
        stamp = time.perf_counter_ns() & 0xFFFFFFFFFFFF
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[stamp] = fut
        t0 = time.perf_counter()
        self._send(encode(Ping(stamp)))
        try:
            async with asyncio.timeout(self.request_timeout):
                t1 = await fut
        except TimeoutError as exc:
            self._pings.pop(stamp, None)
            raise RequestTimeoutError("no PONG in time") from exc
        self.rtt = t1 - t0
        return self.rtt

    def subscription(self, room: str) -> Subscription | None:
        """The subscription for ``room``, if joined."""
        return self._subs.get(room)


def _with_req_id(f: Join | Leave | PresenceList | Publish, req_id: int) -> Frame:
    if isinstance(f, Join):
        return Join(req_id, f.room, f.flags)
    if isinstance(f, Leave):
        return Leave(req_id, f.room)
    if isinstance(f, PresenceList):
        return PresenceList(req_id, f.room)
    return Publish(req_id, f.room, f.payload, f.reliable, f.idem)


async def connect(urls: str | Sequence[str], token: str, *, name: str = "",
                  reconnect: bool = True, request_timeout: float = 10.0,
                  connect_timeout: float = 5.0, backoff_base: float = 0.5,
                  backoff_cap: float = 20.0, ping_interval: float | None = 2.5,
                  ping_timeout: float | None = 2.5, select: str = "order",
                  tls: TlsOptions | None = None) -> Client:
    """Connect to an edge in ``urls`` that accepts ``token``.

    ``select="order"`` tries the URLs in the given order; ``select="rtt"``
    first measures the round trip to each and tries the nearest first.  The
    client pings every ``ping_interval`` seconds and treats a missing pong
    after ``ping_timeout`` as a dead link (then reconnects and resumes).
    ``quic://`` URLs connect over QUIC; ``tls`` says how the edge's
    certificate is checked (default: verified, see :class:`TlsOptions`).
    Raises :class:`AuthError` if the token is refused and :class:`ConnectError`
    if no edge could be reached.
    """
    if select not in ("order", "rtt"):
        raise ValueError("select must be 'order' or 'rtt'")
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if select == "rtt" and len(url_list) > 1:
        url_list = [u for u, _ in await rank_by_rtt(url_list)]
    client = Client(url_list, token, name=name,
                    reconnect=reconnect, request_timeout=request_timeout,
                    connect_timeout=connect_timeout, backoff_base=backoff_base,
                    backoff_cap=backoff_cap, ping_interval=ping_interval,
                    ping_timeout=ping_timeout, tls=tls)
    await client._start()
    return client
