"""One client session on an edge: handshake, limits, frame dispatch.

The mapping from protocol errors to error frames and close codes lives here
and only here: a :class:`ProtocolError` answering a request becomes an ERROR
frame (the connection stays open); :class:`SessionClose` closes the connection
with its code.  Internal exceptions never reach the wire: the client gets
4000 "internal error" and the log gets the traceback.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

from client_sdk.protocol import (
    Ack,
    Claims,
    CommandAck,
    Decoder,
    Error,
    ErrorCode,
    History,
    Join,
    Joined,
    Leave,
    Member,
    Ping,
    Pong,
    PresenceList,
    PresenceMembers,
    ProtocolError,
    Publish,
    Refresh,
    ReportState,
    RoomList,
    RoomListing,
    RoomResync,
    Rpc,
    Telemetry,
    UnknownMessageType,
    encode,
)
from edge_node.rooms.replay import history_page
from edge_node.sessions import token_life
from edge_node.store.base import StoreUnavailable
from edge_node.transports.outbound import Flusher

if TYPE_CHECKING:
    from edge_node.config import EdgeSettings
    from edge_node.fanout.hub import Hub
    from edge_node.iot.service import IotService
    from edge_node.runtime.metrics import EdgeStats
    from edge_node.transports.connection import SessionConn

__all__ = ["ClientSession", "SessionClose", "new_session_id"]

log = logging.getLogger("edge_node.sessions.session")


def new_session_id() -> str:
    """A random, URL-safe session id."""
    return secrets.token_urlsafe(12)


class SessionClose(Exception):
    """Close the connection with ``code`` and a client-safe ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ClientSession:
    """State and dispatch for one authenticated connection.

    Feed every inbound frame to :meth:`handle`; it may raise
    :class:`SessionClose`, after which the caller closes the connection and
    calls :meth:`cleanup`.
    """

    def __init__(
        self,
        *,
        session_id: str,
        claims: Claims,
        conn: SessionConn,
        flusher: Flusher,
        hub: Hub,
        settings: EdgeSettings,
        decoder: Decoder,
        stats: EdgeStats,
        on_slow: object,
    ) -> None:
        self.session_id = session_id
        self.claims = claims
        self.member = Member(session_id, claims.subject, claims.kind)
        self.hub = hub
        self.settings = settings
        self.decoder = decoder
        self.stats = stats
        #: Inbound messages handled (the server's trickle watch reads it).
        self.messages_in = 0
        self.rooms: set[str] = set()
        self.room_flags: dict[str, int] = {}
        self._publish_ok: dict[str, bool] = {}
        self.closed = False
        #: Told to move to another edge (HANDOFF): leaving is then silent.
        self.moving = False
        #: Names this connection as the session's checkpoint holder.
        self.holder = f"{settings.edge_id}:{secrets.token_hex(6)}"
        self.holding = False
        #: The client's connection-attempt number (orders concurrent connections).
        self.attempt = 0
        #: The transport's send path (plain or QUIC): see ``SessionConn.outbound``.
        self.out = conn.outbound(
            flusher, limit=settings.send_queue_bytes,
            soft_limit=settings.unreliable_drop_bytes, on_slow=self._on_slow,
        )
        self._on_slow_cb = on_slow
        self._limited = claims.kind != "service"
        self._tokens = settings.rate_burst
        self._last = time.monotonic()
        self._violations = 0
        self._window_start = time.monotonic()
        #: The edge's IoT service (device frames), set by the server; None = none.
        self.iot: IotService | None = None

    def send(self, data: bytes) -> None:
        """Queue one encoded protocol frame to the client."""
        self.out.push(data)

    def _on_slow(self) -> None:
        self.stats.slow_consumers += 1
        if callable(self._on_slow_cb):
            self._on_slow_cb()

    def _error(self, req_id: int, code: int, message: str) -> None:
        self.stats.errors[code] += 1
        self.send(encode(Error(req_id, code, message)))

    #: Answer request ``req_id`` with an ERROR frame (counted by code).
    refuse = _error

    def replace_claims(self, claims: Claims) -> None:
        """Use ``claims`` (a refreshed token's, same subject and kind) from now on."""
        self.claims = claims
        self._publish_ok.clear()

    def leave_room(self, room: str) -> bool:
        """Leave ``room`` as a LEAVE would (presence leave for the others); False when
        the session was not in it."""
        self.rooms.discard(room)
        self.room_flags.pop(room, None)
        return self.hub.leave(self, room)

    def _rate_ok(self) -> bool:
        now = time.monotonic()
        s = self.settings
        self._tokens = min(s.rate_burst, self._tokens + (now - self._last) * s.rate_per_sec)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        # Violations are counted per one-second window, so a flood cannot dodge
        # the close by letting a token refill now and then.
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._violations = 0
        self._violations += 1
        return False

    async def handle(self, raw: bytes | str) -> None:
        """Process one inbound message (a WebSocket message, QUIC record or datagram)."""
        self.stats.frames_in += 1
        self.messages_in += 1
        if isinstance(raw, str):
            self._error(0, ErrorCode.BAD_REQUEST, "text frames are not supported; send binary")
            return
        self.stats.bytes_in += len(raw)
        if self._limited and not self._rate_ok():
            if self._violations >= self.settings.rate_close_after:
                raise SessionClose(ErrorCode.RATE_LIMITED,
                                   "rate limit exceeded repeatedly within one second")
            # Answer a dropped request (so its sender can retry later).  Frames without
            # a request id (PING, fire-and-forget publishes) get one ERROR with req_id 0
            # per second of violations (protocol.md section 7), not one per frame: a
            # flood must not double the edge's output.
            req_id = self.decoder.peek_req_id(raw)
            if req_id or self._violations == 1:
                self._error(req_id, ErrorCode.RATE_LIMITED,
                            f"rate limit of {self.settings.rate_per_sec:g} frames/s exceeded; "
                            "frames are dropped, retry later")
            else:
                self.stats.errors[ErrorCode.RATE_LIMITED] += 1
            return
        try:
            frame = self.decoder.decode(raw)
        except UnknownMessageType as exc:
            self._error(exc.req_id, exc.code, str(exc))
            return
        except ProtocolError as exc:
            self._error(exc.req_id, exc.code, str(exc))
            return
        t = type(frame)
        if t is Publish:
            assert isinstance(frame, Publish)
            self._publish(frame)
        elif t is Join:
            assert isinstance(frame, Join)
            await self._join(frame)
        elif t is Leave:
            assert isinstance(frame, Leave)
            if self.leave_room(frame.room):
                self.send(encode(Ack(frame.req_id, 0, 0)))
            else:
                self._error(frame.req_id, ErrorCode.NOT_JOINED, f"not joined to {frame.room!r}")
        elif t is Ping:
            assert isinstance(frame, Ping)
            self.send(encode(Pong(frame.stamp)))
        elif t is Pong:
            pass
        elif t is PresenceList:
            assert isinstance(frame, PresenceList)
            await self._presence(frame)
        elif t is RoomResync or t is RoomList:
            await self._game_request(frame)  # type: ignore[arg-type]
        elif t is History:
            assert isinstance(frame, History)
            await self._history(frame)
        elif t is Rpc:
            assert isinstance(frame, Rpc)
            functions = self.hub.functions
            if functions is None:
                self._error(frame.req_id, ErrorCode.UNKNOWN_FUNCTION,
                            "this edge runs no functions")
            else:
                functions.call(self, frame)
        elif t is Refresh:
            assert isinstance(frame, Refresh)
            outcome = token_life.refresh(self, frame, self.settings.secrets, time.time())
            self.stats.token_refreshes[outcome] += 1
        elif self.iot is not None and isinstance(frame, (Telemetry, CommandAck, ReportState)):
            self.iot.handle(self, frame)
        else:
            req = getattr(frame, "req_id", 0)
            self._error(req if isinstance(req, int) else 0, ErrorCode.BAD_REQUEST,
                        f"{t.__name__} frames are not accepted from clients")

    def _may_publish(self, room: str) -> bool:
        # Match the token's patterns once per room, not on every publish (a REFRESH
        # clears the memo: replace_claims).
        ok = self._publish_ok.get(room)
        if ok is None:
            ok = self._publish_ok[room] = self.claims.may_publish(room)
        return ok

    def _publish(self, f: Publish) -> None:
        if not self._may_publish(f.room):
            if f.reliable or f.req_id:
                self._error(f.req_id, ErrorCode.FORBIDDEN,
                            f"token does not allow publishing to {f.room!r}")
            return
        if f.room not in self.rooms:
            if f.reliable or f.req_id:
                self._error(f.req_id, ErrorCode.NOT_JOINED,
                            f"join {f.room!r} before publishing to it")
            return
        games = self.hub.games
        if games is not None and games.is_game(f.room):
            problem = games.check_input(f.payload, f.reliable)
            if problem is not None:
                self._error(f.req_id, *problem)
                return
        self.hub.publish(self, f.room, f.payload, f.reliable, f.req_id, f.idem, f.key)

    async def _join(self, f: Join) -> None:
        if not self.claims.may_join(f.room):
            self._error(f.req_id, ErrorCode.FORBIDDEN, f"token does not allow joining {f.room!r}")
            return
        if f.room in self.rooms:
            epoch, seq = self.hub.position(f.room)
            self.send(encode(Joined(f.req_id, f.room, epoch, seq)))
            return
        if len(self.rooms) >= self.settings.limits.max_rooms_per_connection:
            self._error(f.req_id, ErrorCode.TOO_MANY_ROOMS,
                        f"at most {self.settings.limits.max_rooms_per_connection} rooms "
                        "per connection")
            return
        self.rooms.add(f.room)
        self.room_flags[f.room] = f.flags
        epoch, seq = await self.hub.join(self, f.room, f.flags)
        if self.closed:  # the connection went away while Redis answered
            self.hub.leave(self, f.room)
            return
        games = self.hub.games
        if games is not None and games.is_game(f.room):
            # JOINED comes from the room's handler (its owner), once it accepts.
            code, text = await games.join(self, f.room, f.req_id, f.options)
            if code:
                self.rooms.discard(f.room)
                self.room_flags.pop(f.room, None)
                self.hub.leave(self, f.room, quiet=True)
                self._error(f.req_id, code, text)
            return
        self.send(encode(Joined(f.req_id, f.room, epoch, seq)))

    async def _game_request(self, f: RoomResync | RoomList) -> None:
        games = self.hub.games
        if isinstance(f, RoomList):
            rooms = [] if games is None else await games.listing(f.pattern)
            self.send(encode(RoomListing(f.req_id, rooms)))
        elif games is None or not games.is_game(f.room):
            self._error(0, ErrorCode.BAD_REQUEST, f"{f.room!r} is not a game room")
        elif f.room not in self.rooms:
            self._error(0, ErrorCode.NOT_JOINED, f"not joined to {f.room!r}")
        else:
            games.resync(self, f.room)

    async def _history(self, f: History) -> None:
        """HISTORY: a page of the room's stored messages (the token must allow joining
        the room; membership is not needed: a new session catches up before joining)."""
        if not self.claims.may_join(f.room):
            self._error(f.req_id, ErrorCode.FORBIDDEN, f"token does not allow {f.room!r}")
            return
        limit = min(max(f.limit, 1), 1000)
        store = self.hub.store
        try:
            records, gap, first = await store.history_after(f.room, f.epoch, f.seq, limit + 1)
            if gap and first is not None:  # trimmed: start at the oldest message kept
                after = (first[0], first[1] - 1) if first[1] else (first[0] - 1, 2**63)
                records, _gap, _first = await store.history_after(f.room, *after, limit + 1)
        except StoreUnavailable:
            self._error(f.req_id, ErrorCode.INTERNAL,
                        "history unavailable (the store is unreachable); retry")
            return
        budget = self.settings.limits.max_frame_bytes - 1024
        self.send(encode(history_page(f.req_id, f.room, records, limit, gap, budget)))

    async def _presence(self, f: PresenceList) -> None:
        if not self.claims.may_join(f.room):
            self._error(f.req_id, ErrorCode.FORBIDDEN, f"token does not allow {f.room!r}")
            return
        members = await self.hub.presence(f.room)
        cap = self.settings.limits.max_presence_list
        self.send(encode(PresenceMembers(f.req_id, f.room, tuple(members[:cap]))))

    def cleanup(self, lost: bool = False) -> None:
        """Leave every room; call once when the connection is gone (``lost``: without a
        normal close from the client, which may be resuming)."""
        self.closed = True
        for name in list(self.rooms):
            self.hub.leave(self, name, quiet=self.moving, lost=lost)
        self.rooms.clear()
        self.out.close()
