"""The demo's stalled spectators: what a client that stops reading gets under the
``latest`` and ``drop`` delivery policies (docs/protocol.md, delivery policies).

A feed (a ``service`` client on the first edge, the one the demo neither drains nor
kills) publishes, :attr:`Spectators.rate` times a second, an unreliable position
update of one of :attr:`Spectators.keys` entities (keyed by entity) to one room and
a reliable message to another (on every tick, or fewer in a long run: at most
:data:`MAX_RELIABLE` in all, so the room's history still holds them to recover).
Two spectators watch them through real WebSocket connections
(:func:`open_slow_reader`) and **stop reading for the middle third of the run**, as
an app sent to the background would:

- the ``latest`` spectator must end with the newest update of every entity and never
  see an older one after a newer one;
- the ``drop`` spectator is told what it missed (DROPPED) and reads it back from the
  room's history (``Subscription.recover``): what it received plus what it recovered
  is every acknowledged message, exactly once.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from client_sdk import Client, Position, connect
from client_sdk.protocol import (
    PROTOCOL_VERSION,
    Dropped,
    Hello,
    Join,
    Joined,
    Message,
    decode,
    delivery_flags,
    encode,
    mint_token,
)
from client_sdk.transport import TlsOptions

__all__ = ["Spectators", "open_slow_reader"]

LATEST_ROOM, DROP_ROOM = "spectate-positions", "spectate-feed"
#: Reliable feed messages in one run at most (an edge's stream keeps 10,000).
MAX_RELIABLE = 8000


async def open_slow_reader(url: str, token: str, room: str, flags: int,
                           ca_file: str = "") -> ClientConnection:
    """A WebSocket connection (``ws://`` or ``wss://``, trusting ``ca_file``) that joined
    ``room`` with JOIN ``flags`` and reads only when its owner calls ``recv``: its
    socket's receive buffer is small and its library stops taking frames off the socket
    once one is queued, so an edge's send queue to it grows as soon as it stops."""
    u = urlsplit(url)
    host = u.hostname or "127.0.0.1"
    port = u.port or (443 if u.scheme == "wss" else 80)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    tls: dict[str, Any] = {}
    if u.scheme == "wss":
        tls = {"ssl": ssl.create_default_context(cafile=ca_file or None),
               "server_hostname": host}
    ws = await ws_connect(url, sock=sock, max_queue=1, max_size=None, **tls)
    await ws.send(encode(Hello(PROTOCOL_VERSION, token, "slow-reader", None)))
    await ws.send(encode(Join(1, room, flags)))
    while not isinstance(decode(await asyncio.wait_for(ws.recv(decode=False), 10)), Joined):
        pass
    return ws


class _Spectator:
    """One stalled reader and what it received."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[Message] = []
        self.notices: list[Dropped] = []

    async def read(self, until: float) -> None:
        """Take frames until loop time ``until`` (or the connection ends)."""
        while (left := until - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except (TimeoutError, ConnectionClosed):
                return
            self._take(raw)

    async def read_until_idle(self, idle: float = 1.0, bound: float = 10.0) -> None:
        """Take frames until none came for ``idle`` s (at most ``bound`` s)."""
        end = time.monotonic() + bound
        while time.monotonic() < end:
            try:
                raw = await asyncio.wait_for(self.ws.recv(), idle)
            except (TimeoutError, ConnectionClosed):
                return
            self._take(raw)

    def _take(self, raw: bytes | str) -> None:
        if isinstance(raw, str):
            return
        f = decode(raw)
        if isinstance(f, Message):
            self.messages.append(f)
        elif isinstance(f, Dropped):
            self.notices.append(f)


class Spectators:
    """The feed and its two stalled spectators (see the module docstring)."""

    def __init__(self, url: str, secret: bytes, *, ca_file: str = "", keys: int = 16,
                 rate: float = 200.0, payload: int = 512) -> None:
        self.url, self.secret, self.ca_file = url, secret, ca_file
        self.keys, self.rate, self.payload = keys, rate, payload
        self.feed: Client | None = None
        self.latest: _Spectator | None = None
        self.drop: _Spectator | None = None
        self.newest: dict[int, int] = {}  # key -> last update number published
        self.positions: list[Position] = []  # the drop room's acknowledged messages
        self.stalled_s = 0.0
        self._pending: set[asyncio.Future[Position]] = set()

    def _token(self, subject: str, kind: str) -> str:
        return mint_token(self.secret, subject, kind, ["spectate-*"], now=time.time(),
                          ttl=3600)

    async def start(self) -> None:
        """Connect the feed and both spectators (each joins with its policy)."""
        self.feed = await connect(self.url, self._token("spectator-feed", "service"),
                                  name="demo-spectator-feed",
                                  tls=TlsOptions(ca_file=self.ca_file or None))
        await self.feed.join(LATEST_ROOM, on_message=lambda m: None)
        await self.feed.join(DROP_ROOM, on_message=lambda m: None)
        self.latest = _Spectator(await open_slow_reader(
            self.url, self._token("spectator-latest", "player"), LATEST_ROOM,
            delivery_flags("latest"), self.ca_file))
        self.drop = _Spectator(await open_slow_reader(
            self.url, self._token("spectator-drop", "player"), DROP_ROOM,
            delivery_flags("drop"), self.ca_file))

    async def run(self, duration: float) -> None:
        """Feed for ``duration`` s; the spectators read, stall for the middle third,
        then read again."""
        assert self.latest is not None and self.drop is not None
        t0 = time.monotonic()
        self.stalled_s = duration / 3

        async def watch(s: _Spectator) -> None:
            await s.read(t0 + duration / 3)
            await asyncio.sleep(max(0.0, t0 + 2 * duration / 3 - time.monotonic()))
            await s.read(t0 + duration)

        await asyncio.gather(self._publish(t0, duration), watch(self.latest),
                             watch(self.drop))

    async def _publish(self, t0: float, duration: float) -> None:
        feed = self.feed
        assert feed is not None
        pad = b"." * self.payload
        every = max(1, -(-int(self.rate * duration) // MAX_RELIABLE))  # ceil
        n = 0
        while (due := t0 + n / self.rate) < t0 + duration:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            key = n % self.keys
            feed.publish_nowait(LATEST_ROOM, b"%d:%d:" % (key, n) + pad, reliable=False,
                                key=f"entity-{key}")
            self.newest[key] = n
            n += 1
            if n % every:
                continue
            fut = feed.publish_nowait(DROP_ROOM, b"%d:" % n + pad)
            assert fut is not None
            self._pending.add(fut)
            fut.add_done_callback(self._acked)

    def _acked(self, fut: asyncio.Future[Position]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is None:
            self.positions.append(fut.result())

    async def summary(self) -> dict[str, Any]:
        """What each spectator got; closes everything.  ``ok`` when ``latest`` ended
        with the newest update of every entity and saw no stale one, and ``drop``
        received or recovered every acknowledged message once."""
        assert self.latest is not None and self.drop is not None and self.feed is not None
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=10.0)
        await self.latest.read_until_idle()
        await self.drop.read_until_idle()
        last_seen: dict[int, int] = {}
        stale = 0
        for m in self.latest.messages:
            key, n = (int(x) for x in m.payload.split(b":", 2)[:2])
            if n <= last_seen.get(key, -1):
                stale += 1
            last_seen[key] = max(n, last_seen.get(key, -1))
        got = [(m.epoch, m.seq) for m in self.drop.messages]
        sub = self.feed.subscription(DROP_ROOM)
        assert sub is not None
        gaps: list[tuple[int, int]] = []
        recovered = 0
        for notice in self.drop.notices:
            gaps += [(notice.first[0], s) for s in range(notice.first[1], notice.last[1] + 1)]
            recovered += len(await sub.recover(notice))
        acked = sorted((p.epoch, p.seq) for p in self.positions)
        await self.latest.ws.close()
        await self.drop.ws.close()
        await self.feed.close()
        latest = {"published": len(self.latest_published()), "received":
                  len(self.latest.messages), "stale": stale,
                  "newest_of_every_key": last_seen == self.newest}
        drop = {"published": len(acked), "received": len(got),
                "notices": len(self.drop.notices),
                "dropped": sum(n.dropped for n in self.drop.notices),
                "recovered": recovered,
                "complete": sorted(got + gaps) == acked and recovered == len(gaps)}
        return {"stalled_s": round(self.stalled_s, 1), "rate_hz": self.rate,
                "keys": self.keys, "latest": latest, "drop": drop,
                "ok": latest["newest_of_every_key"] and not stale and drop["complete"]}

    def latest_published(self) -> range:
        """The update numbers published to the ``latest`` room (one per feed tick)."""
        return range(max(self.newest.values(), default=-1) + 1)
