"""The asyncio client: a pump around the protocol core, plus the reconnect policy.

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

Layers: the session's protocol state (request ids, pending requests, the
outbox, dedupe, the resume map, deadlines) is the sans-I/O
:class:`~client_sdk.protocol.connection.ClientConnection`.  This class pumps
it: link frames -> ``receive`` -> events -> futures and subscriptions;
``data_to_send`` -> link; one timer armed from ``next_deadline``.  What is
left here is I/O and policy: opening links, backoff, failover, handoff.

Transports (:mod:`client_sdk.transport`): ``ws://``/``wss://`` URLs use
WebSocket, ``quic://`` URLs QUIC, where ``publish(..., reliable=False)`` goes
as a datagram.  Each edge's WELCOME names its URL on the other transport; when
a QUIC edge cannot be reached (UDP blocked) the client tries that edge's
WebSocket URL next, and vice versa.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence

from .backoff import Backoff
from .errors import AuthError, ClientClosedError, ConnectError, EdgeRelayError, error_for_code
from .failover import EdgeList, retry_hint_from_close
from .probe import rank_by_rtt
from .protocol import (
    ErrorCode,
    Message,
    ProtocolError,
    Retry,
    Welcome,
    retry_for_close,
)
from .protocol.events import HandoffRequested
from .pump import Position, now
from .room_api import RoomApi
from .rtt import EdgeRtts, probe_loop
from .token_refresh import TokenKeeper, TokenProvider
from .transport import Link, LinkClosed, RefusedError, TlsOptions, TlsVerifyError, open_link

__all__ = ["Client", "Position", "ReceivedMessage", "connect"]

#: A message delivered to the application (the protocol's MESSAGE frame).
ReceivedMessage = Message


class _InvalidURL(Exception):
    """A URL no transport serves: fail at once instead of trying the next one."""


class Client(RoomApi):
    """A connection to the edge network.  Create with :func:`connect`.

    The protocol state lives in the core (``ClientConnection``), its I/O in
    :class:`~client_sdk.pump.ClientPump`; this class adds the connection
    policy (which edge, when to retry, handoff) and the room API.
    """

    #: Longest overlap of a handoff: the old connection is closed after this even if
    #: the new edge has not resumed every room (it replays them anyway).
    HANDOFF_OVERLAP_MAX = 5.0

    def __init__(self, urls: Sequence[str], token: str, *, name: str = "",
                 reconnect: bool = True, request_timeout: float = 10.0,
                 connect_timeout: float = 5.0, backoff_base: float = 0.5,
                 backoff_cap: float = 20.0, max_send_buffer: int = 4 * 1024 * 1024,
                 ping_interval: float | None = 2.5, ping_timeout: float | None = 2.5,
                 tls: TlsOptions | None = None,
                 token_provider: TokenProvider | None = None,
                 rtt_probe_interval: float | None = 30.0) -> None:
        if not urls:
            raise ValueError("at least one URL is required")
        self._backoff = Backoff(backoff_base, backoff_cap)
        super().__init__(request_timeout=request_timeout, retry_delay=backoff_base)
        self.urls = list(urls)
        self.token = token
        self.name = name
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        self.max_send_buffer = max_send_buffer
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.tls = tls or TlsOptions()
        self._edges = EdgeList(self.urls)
        #: Completed make-before-break moves (HANDOFF from a draining edge).
        self.handoffs = 0
        self._handing_off = False
        self._retiring: set[Link] = set()
        self._retry_hint = 0.0
        self.url = ""
        self.reconnects = 0
        self.on_reconnect: Callable[[Client], None] | None = None
        #: Called after each make-before-break move to another edge (HANDOFF).
        self.on_handoff: Callable[[Client], None] | None = None
        self._runner: asyncio.Task[None] | None = None
        #: Keeps the token fresh when the application gave a ``token_provider``.
        self.tokens = TokenKeeper(self, token_provider) if token_provider else None
        #: Smoothed RTT per known edge, probed every ``rtt_probe_interval`` s (None: off).
        self.rtts = EdgeRtts()
        self.rtt_probe_interval = rtt_probe_interval

    # -- connection management ----------------------------------------------------

    async def _open(self, url: str) -> tuple[Link, Welcome]:
        """Open a link to ``url``, say HELLO (resuming the session) and read its WELCOME."""
        if self.tokens is not None:
            await self.tokens.fresh_for_hello()
        token = self.token
        try:
            hello = self._core.hello(token, self.name)
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
            raise _InvalidURL(url) from exc
        try:
            link.send(hello)
            async with asyncio.timeout(self.connect_timeout):
                raw = await link.recv()
            frame = self._core.decode(raw)
            if not isinstance(frame, Welcome):
                raise ConnectError(f"{url}: expected WELCOME, got {type(frame).__name__}")
            if self.tokens is not None and token != self.token:
                self.tokens.resend()  # refreshed on the old link meanwhile: tell this edge
            return link, frame
        except LinkClosed as exc:
            code, reason = exc.code, exc.reason
            if code is not None and retry_for_close(code) is Retry.NEVER:
                raise error_for_code(code, reason or "rejected") from exc
            self._retry_hint = max(self._retry_hint, retry_hint_from_close(code, reason))
            raise ConnectError(f"{url}: closed during handshake ({code} {reason})") from exc
        except BaseException:
            with contextlib.suppress(Exception):
                await link.close()
            raise

    def _candidates(self, elsewhere: bool) -> list[str]:
        return self._edges.candidates(self.url, self.neighbours, self.urls, elsewhere,
                                      self.rtts)

    @property
    def edge_rtts(self) -> dict[str, float | None]:
        """Smoothed round trip in seconds to each edge the client has probed (None: its
        last probe went unanswered); failover tries the fastest first."""
        return self.rtts.snapshot()

    def _adopt(self, link: Link, url: str, welcome: Welcome) -> None:
        if self.tokens is not None:
            self.tokens.accepted()
        self.url = url
        self._edges.learn(welcome.info)
        self._adopt_link(link, welcome)

    async def _connect_any(self, candidates: list[str] | None = None) -> None:
        """Try each candidate once, in order; adopt the first that welcomes us."""
        errors: list[str] = []
        untrusted: list[TlsVerifyError] = []  # certificates that did not verify
        for url in candidates if candidates is not None else self.urls:
            try:
                link, welcome = await self._open(url)
            except EdgeRelayError as exc:
                code = getattr(exc, "code", None)
                if code is not None and retry_for_close(code) is Retry.NEVER:
                    raise
                if isinstance(exc, TlsVerifyError):
                    untrusted.append(exc)
                errors.append(str(exc) if isinstance(exc, TlsVerifyError) else f"{url}: {exc}")
                continue
            except (OSError, TimeoutError, ProtocolError) as exc:
                errors.append(f"{url}: {exc or type(exc).__name__}")
                continue
            except _InvalidURL as exc:
                raise ConnectError(f"invalid URL {url!r}") from exc
            self._adopt(link, url, welcome)
            return
        if errors and len(untrusted) == len(errors):  # a trust problem, not the network
            raise TlsVerifyError(", ".join(e.url for e in untrusted), "; ".join(
                dict.fromkeys(e.reason for e in untrusted))) from untrusted[-1]
        raise ConnectError("could not connect to any edge: " + "; ".join(errors))

    async def _start(self) -> None:
        tokens = self.tokens
        if tokens is not None and not self.token:
            tokens.adopt(await tokens.fetch())
        while True:
            try:
                await self._connect_any()
                break
            except AuthError as exc:  # an expired token: a new one, if a provider gives it
                if not await self._renew_token(exc.code, exc):
                    raise
        self._connected.set()
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="client-run")
        if tokens is not None:
            self._background(tokens.run())
        if self.rtt_probe_interval is not None:
            self._background(probe_loop(
                self.rtts, lambda: [self.url, *self.neighbours, *self.urls],
                self.rtt_probe_interval, self.tls,
                alive=lambda: self._core.closed is None))

    async def _renew_token(self, code: int | None, why: EdgeRelayError) -> bool:
        """After 4402 (the session's or a HELLO's token expired): True when the token
        provider gave a new token to resume with."""
        return (code == ErrorCode.TOKEN_EXPIRED and self.tokens is not None
                and await self.tokens.renew_after_refusal(why))

    async def _run(self) -> None:
        core = self._core
        while True:
            link = self._link
            assert link is not None
            try:
                async for raw in link.messages():
                    if isinstance(raw, bytes):
                        self._received(link, raw)
            except LinkClosed:
                pass
            code, reason = link.close_code, link.close_reason
            if link is not self._link:
                return  # handed off: another runner reads the new connection
            self._connected.clear()
            core.connection_lost(f"connection lost ({code} {reason})")
            self._pump(now())
            if core.closed is not None:
                return
            retry = retry_for_close(code)
            closed = ClientClosedError(f"closed by edge: {code} {reason}", code)
            if retry is Retry.NEVER and self.reconnect and await self._renew_token(code, closed):
                retry = Retry.RECONNECT  # resume the session with the new token
            if retry is Retry.NEVER or not self.reconnect:
                self._shutdown(closed)
                return
            # A link that died without the edge saying why (no close frame, or our
            # keepalive gave up) may mean a dead or frozen edge: try the neighbours
            # first.  A frozen edge still accepts TCP and would hold the handshake
            # until connect_timeout (measured: 7.8 s to be served again, not 1-2 s).
            elsewhere = retry is Retry.RECONNECT_ELSEWHERE or code in (None, 1006, 1011)
            if not await self._reconnect_loop(elsewhere=elsewhere):
                return

    async def _reconnect_loop(self, elsewhere: bool) -> bool:
        while self._core.closed is None:
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
                if await self._renew_token(getattr(exc, "code", None), exc):
                    continue
                self._shutdown(ClientClosedError(f"reconnect refused: {exc}",
                                                 getattr(exc, "code", None)))
                return False
            # Adopted: the edge re-joins our rooms from the resume map (RESUMED
            # frames follow); the core re-sent the outbox, in order.
            self._backoff.reset()
            self.reconnects += 1
            self._connected.set()
            if self.on_reconnect is not None:
                self.on_reconnect(self)
            return True
        return False

    def _handoff_requested(self, ev: HandoffRequested) -> None:
        self._background(self._handoff(ev.url, ev.deadline_ms))

    @staticmethod
    async def _close_quietly(link: Link, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await link.close(code, reason)

    async def _handoff(self, url: str, deadline_ms: int) -> None:
        """Make before break: resume on ``url`` while the old connection still
        delivers, switch to it, and close the old one (code 4101) only once the new
        edge has resumed every room (or ``deadline_ms`` has passed): until then
        messages arrive on both and copies are dropped by position."""
        if self._handing_off or self._core.closed is not None:
            return
        self._handing_off = True
        old = self._link
        try:
            for target in [url, *self._candidates(elsewhere=True)]:
                if target == self.url:
                    continue
                try:
                    link, welcome = await self._open(target)
                except (EdgeRelayError, OSError, TimeoutError, ProtocolError):
                    continue
                if self._core.closed is not None:
                    await link.close()
                    return
                # Requests, acks and everything but messages now go over the new
                # connection (the core fails requests pending on the old one and
                # re-sends the outbox); the old one's runner keeps reading it and
                # passes on only its messages (the new edge replays everything after
                # the positions our HELLO carried, so nothing depends on them, but
                # until the new edge has resumed the rooms they are the freshest).
                self._unresumed = set(self._subs)
                self._all_resumed.clear()
                if not self._unresumed:
                    self._all_resumed.set()
                self._adopt(link, target, welcome)
                self.handoffs += 1
                if self.on_handoff is not None:
                    self.on_handoff(self)
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
                if old is not None:
                    self._retiring.add(old)
                    self._background(self._retire(old, deadline_ms / 1000.0))
                return
            # No neighbour took us: the old edge will close us (4100) and the
            # reconnect loop takes over from there.
        finally:
            self._handing_off = False

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

    async def close(self) -> None:
        """Close the connection; subscriptions end.  Safe to call twice."""
        if self._core.closed is None:
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


async def connect(urls: str | Sequence[str], token: str | None = None, *, name: str = "",
                  reconnect: bool = True, request_timeout: float = 10.0,
                  connect_timeout: float = 5.0, backoff_base: float = 0.5,
                  backoff_cap: float = 20.0, ping_interval: float | None = 2.5,
                  ping_timeout: float | None = 2.5, select: str = "order",
                  tls: TlsOptions | None = None,
                  token_provider: TokenProvider | None = None,
                  rtt_probe_interval: float | None = 30.0) -> Client:
    """Connect to an edge in ``urls`` that accepts ``token``.

    ``token_provider`` (a callable, async or not, returning a new token) keeps the
    session's token valid: refreshed on the live connection before it expires, a
    fresh one for every reconnect, and a new one to resume with if the edge closed
    the session because it expired (:mod:`client_sdk.token_refresh`).  With a
    provider, ``token`` may be left out: the first one comes from the provider.

    ``select="order"`` tries the URLs in the given order; ``select="rtt"``
    first measures the round trip to each and tries the nearest first.  Once
    connected, the client probes the edges it knows every ``rtt_probe_interval``
    seconds (None: never; :mod:`client_sdk.rtt`) and fails over to the fastest
    first (``client.edge_rtts``).  The
    client pings every ``ping_interval`` seconds and treats a missing pong
    after ``ping_timeout`` as a dead link (then reconnects and resumes).
    ``quic://`` URLs connect over QUIC; ``tls`` says how the edge's
    certificate is checked for ``wss://`` and ``quic://`` URLs, on every
    connection, reconnect and failover (default: verified against the system
    roots, see :class:`~client_sdk.transport.TlsOptions`).
    Raises :class:`AuthError` if the token is refused,
    :class:`~client_sdk.transport.TlsVerifyError` (a :class:`ConnectError`) if
    every edge failed because its certificate did not verify, and
    :class:`ConnectError` if no edge could be reached.
    """
    if select not in ("order", "rtt"):
        raise ValueError("select must be 'order' or 'rtt'")
    if token is None and token_provider is None:
        raise ValueError("a token or a token_provider is required")
    url_list = [urls] if isinstance(urls, str) else list(urls)
    measured: list[tuple[str, float | None]] = []
    if select == "rtt" and len(url_list) > 1:
        measured = await rank_by_rtt(url_list, tls=tls)
        url_list = [u for u, _ in measured]
    client = Client(url_list, token or "", name=name,
                    reconnect=reconnect, request_timeout=request_timeout,
                    connect_timeout=connect_timeout, backoff_base=backoff_base,
                    backoff_cap=backoff_cap, ping_interval=ping_interval,
                    ping_timeout=ping_timeout, tls=tls, token_provider=token_provider,
                    rtt_probe_interval=rtt_probe_interval)
    for url, rtt in measured:
        client.rtts.record(url, rtt)
    await client._start()
    return client

