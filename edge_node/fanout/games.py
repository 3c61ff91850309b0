"""Game rooms on an edge: the driver of :class:`~edge_node.games.room.GameRoom` machines.

A room whose name matches a handler pattern (:class:`~edge_node.games.loader.HandlerRegistry`)
is a *game room*.  It is still an ordinary room underneath (one room machine, one
stream, one owner), with three differences:

- **Inputs go through the room's stream.**  A player's input is a reliable PUBLISH
  (``[kind, value]``); joins and leaves are entries the member's edge publishes on the
  player's behalf (kinds ``$join`` / ``$leave``, which clients cannot send).  They are
  ordered, deduplicated and durable like any message, and not fanned out: on the
  owner, each entry is fed to the room's :class:`GameRoom`; elsewhere it is dropped.
- **The handler runs on the owner only**, from the first ``$join`` it sees while its
  room machine assigns positions (OWNED or LOCAL), and stops when that ends.
- **Output goes to players, not members.**  A member becomes a player when the owner's
  handler accepts its join; patches, full states and events reach local players
  directly and players on other edges through the room's live channel (the member's
  edge delivers them).  A lost live message shows as a patch that does not follow:
  the client asks for a resync (ROOM_RESYNC) and gets its whole view again.

**Continuity** (docs/rooms.md, "Continuity"): ``$tick`` marks, snapshots, restore on
a new owner and the live move on a drain are :class:`GameContinuity`'s
(:mod:`edge_node.fanout.game_continuity`), one per host (``host.cont``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import (
    Error,
    ErrorCode,
    Joined,
    Member,
    Message,
    decode,
    encode,
    pack_input,
    unpack_input,
)
from client_sdk.protocol.state_sync import state_checksum
from edge_node.fanout.game_continuity import GameContinuity, event_of
from edge_node.games import events as ge
from edge_node.games.listing import pack_listing, unpack_listings
from edge_node.games.loader import HandlerRegistry
from edge_node.games.room import GamePhase, GameRoom, GameSettings, GameStats
from edge_node.runtime.tasks import spawn
from edge_node.store.base import StoreUnavailable
from edge_node.store.records import LIVE_GAME, LIVE_GAME_RESYNC, LIVE_GAME_VERDICT
from edge_node.transports.outbound import FrameSink, Outbound, ws_binary_frame

if TYPE_CHECKING:
    from edge_node.fanout.hub import Hub, SessionLike
    from edge_node.rooms.machine import RoomMachine

__all__ = ["GameHost", "GameTotals", "CONTROL_PREFIX"]

log = logging.getLogger("edge_node.fanout.games")

#: Input kinds starting with this are the edge's own (joins, leaves): clients cannot
#: send them.
CONTROL_PREFIX = "$"
#: Request ids of the edge's own publishes (never a client's: they count from 1).
_CONTROL_REQ = 1 << 62


class _Proxy:
    """Stands for a player when its edge publishes a join or leave on its behalf: the
    acknowledgement is not the client's business (it gets JOINED or ERROR instead)."""

    __slots__ = ("closed", "member", "session_id")
    out: FrameSink

    def __init__(self, session_id: str, member: Member) -> None:
        self.session_id = session_id
        self.member = member
        self.closed = False

    def send(self, data: bytes) -> None:
        """Drop it."""


@dataclass(slots=True)
class _Pending:
    session: SessionLike
    room: str
    deadline: float
    done: asyncio.Future[tuple[int, str]]


@dataclass(slots=True)
class GameTotals:
    """Counters over every game room this edge ran (for /metrics and the demo)."""

    started: int = 0
    failed: int = 0
    joins_refused: int = 0
    join_timeouts: int = 0
    resyncs: int = 0
    #: Stats of rooms already disposed, added up.
    done: GameStats = field(default_factory=GameStats)
    #: Continuity: ``$tick`` marks appended; snapshots stored, refused or failed (too
    #: large, not picklable, store refused or unreachable), the last one's size and
    #: capture time; rooms restored from a snapshot, owners that found none (a fresh
    #: room at the next join), snapshots that did not load, restores across a gap in
    #: the stream (inputs lost), entries replayed; the last restore's time from owning
    #: the room to ticking; rooms moved live on a drain, away and in (restored from a
    #: drain's final snapshot: players kept their patches).
    marks: int = 0
    snapshots: int = 0
    snapshot_failures: int = 0
    snapshot_bytes: int = 0
    capture_seconds: float = 0.0
    restores: int = 0
    fresh: int = 0
    restore_failures: int = 0
    restore_gaps: int = 0
    replayed_entries: int = 0
    restore_seconds: float = 0.0
    handovers: int = 0
    moved_in: int = 0


class GameHost:
    """The game rooms of one edge (see the module docstring).  ``join_timeout``: seconds
    a join waits for the owner's verdict before ERROR 4005 (retry)."""

    def __init__(self, hub: Hub, registry: HandlerRegistry,
                 settings: GameSettings | None = None, join_timeout: float = 5.0,
                 secrets: tuple[bytes, ...] = (), snapshot_ttl: float = 600.0) -> None:
        self.hub = hub
        self.edge_id = hub.edge_id
        self.registry = registry
        self.cfg = settings or GameSettings()
        self.join_timeout = join_timeout
        #: Game rooms running here (this edge owns them).
        self.rooms: dict[str, GameRoom] = {}
        #: Member side: room -> session ids of accepted players here.
        self.local: dict[str, set[str]] = {}
        self.totals = GameTotals()
        self._pending: dict[tuple[str, int], _Pending] = {}
        #: room -> (timer handle, the deadline it is for).  uvloop's call_at returns a
        #: plain Handle (no ``when()``) for a deadline already past, so keep it here.
        self._timers: dict[str, tuple[asyncio.Handle, float]] = {}
        self._req = itertools.count(_CONTROL_REQ)
        #: The sender of ``$tick`` marks (the room's own entries, never a player).
        self._marker = _Proxy("$room", Member("$room", "", "service"))
        #: Snapshots, marks and restores of the game rooms this edge owns.
        self.cont = GameContinuity(self, secrets, snapshot_ttl)
        self._listed = 0.0
        #: Observers of tick time and lateness (seconds), set by the metrics.
        self.observe_tick: Any = None
        self.observe_lateness: Any = None

    def is_game(self, room: str) -> bool:
        """True if ``room`` runs a handler."""
        return self.registry.match(room) is not None

    # -- the member's side ------------------------------------------------------------

    async def join(self, s: SessionLike, room: str, req_id: int,
                   options: dict[str, Any]) -> tuple[int, str]:
        """Ask the room's owner to let ``s`` (already a member of ``room``) in.  Returns
        ``(0, "")`` once accepted — JOINED has been sent — or ``(code, text)``: the
        caller sends ERROR and drops the membership."""
        fut: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        key = (s.session_id, req_id)
        self._pending[key] = _Pending(s, room, time.monotonic() + self.join_timeout, fut)
        self._control(s, room, "$join", {"req": req_id, "subject": s.member.subject,
                                         "options": options, "edge": self.edge_id})
        try:
            return await fut
        finally:
            self._pending.pop(key, None)

    def check_input(self, payload: bytes, reliable: bool) -> tuple[int, str] | None:
        """Why a client's PUBLISH to a game room is refused (``(code, text)``), or None.
        Checked on the member's edge, before the input enters the stream."""
        if not reliable:
            return (ErrorCode.BAD_REQUEST,
                    "inputs to a game room are reliable (publish with reliable=True)")
        if len(payload) > self.cfg.max_input_bytes:
            return (ErrorCode.FRAME_TOO_LARGE, f"input of {len(payload)} bytes is over the "
                    f"limit of {self.cfg.max_input_bytes}")
        try:
            kind, _value = unpack_input(payload)
        except ValueError as exc:
            return ErrorCode.BAD_REQUEST, str(exc)
        if kind.startswith(CONTROL_PREFIX) or not kind:
            return (ErrorCode.BAD_REQUEST,
                    f"input kinds starting with {CONTROL_PREFIX!r} are reserved")
        return None

    def rejoin(self, s: SessionLike, room: str) -> None:
        """A resumed session is back in ``room`` here: tell the owner where it is now.
        It was a player: patches reach it here from now on (its mirror goes on from its
        last patch, or asks for a resync if it missed one)."""
        self.local.setdefault(room, set()).add(s.session_id)
        self._control(s, room, "$join", {"req": 0, "subject": s.member.subject,
                                         "options": {}, "edge": self.edge_id})

    def leave(self, s: SessionLike, room: str) -> None:
        """``s`` left ``room`` for good (not a handoff): the owner drops the player."""
        players = self.local.get(room)
        if players is not None:
            players.discard(s.session_id)
        if room in self.hub.rooms:
            self._control(s, room, "$leave", {})

    def resync(self, s: SessionLike, room: str) -> None:
        """A player's mirror is out of step: have the owner send its whole view."""
        self.totals.resyncs += 1
        if room in self.rooms:
            self._feed(room, self.rooms[room], ge.Resync(s.session_id))
        else:
            self.hub.store.publish_live(room, LIVE_GAME_RESYNC, [s.session_id])

    async def listing(self, pattern: str, limit: int = 100) -> list[dict[str, Any]]:
        """Running game rooms whose name matches ``pattern``, by name, at most
        ``limit``: the ones this edge runs as they are now, each with its state
        ``version`` and the ``checksum`` of its whole state (a client that sees all of it
        holds the same checksum at that version), then the ones other edges run, as
        their owners last published them (without a checksum)."""
        local = {n: self._entry_of(n, g) for n, g in self.rooms.items()
                 if g.phase is GamePhase.RUNNING and fnmatch.fnmatchcase(n, pattern)}
        for e in local.values():
            e["checksum"] = state_checksum(self.rooms[e["name"]].full_view())
        try:
            stored = await self.hub.store.listings()
        except StoreUnavailable:
            stored = {}
        others = [e for e in unpack_listings(stored, pattern, time.time())
                  if e["name"] not in local]
        return sorted([*local.values(), *others], key=lambda e: e["name"])[:limit]

    def _entry_of(self, room: str, g: GameRoom) -> dict[str, Any]:
        return {"name": room, "players": len(g.players),
                "max_players": type(g.handler).max_players,
                "metadata": dict(g.handler.metadata), "edge": self.edge_id,
                "version": g.version}

    def _publish_listings(self) -> None:
        now = time.time()
        for room, g in self.rooms.items():
            if g.phase is GamePhase.RUNNING:
                self.hub.store.put_listing(room, pack_listing(self._entry_of(room, g), now))

    def _control(self, s: SessionLike, room: str, kind: str, value: dict[str, Any]) -> None:
        proxy = _Proxy(s.session_id, s.member)
        self.hub.publish(proxy, room, pack_input(kind, value), True,
                         next(self._req), 0)

    def _verdict(self, player: str, req_id: int, room: str, code: int, text: str) -> None:
        """The owner's answer to a join of a session of this edge."""
        if code == 0:
            self.local.setdefault(room, set()).add(player)
        if req_id == 0:
            return  # a re-join after resume: nothing to answer
        p = self._pending.pop((player, req_id), None)
        if p is None or p.done.done():
            return
        if code == 0 and not p.session.closed:
            epoch, seq = self.hub.position(room)
            p.session.send(encode(Joined(req_id, room, epoch, seq)))
        elif code:
            self.totals.joins_refused += 1
        p.done.set_result((code, text))

    def tick(self, now: float) -> None:
        """Expire joins the owner did not answer in time, and refresh the listings of
        the rooms running here about once a second (call a few times a second)."""
        if now - self._listed >= 1.0:
            self._listed = now
            self._publish_listings()
        for key, p in list(self._pending.items()):
            if p.deadline <= now and not p.done.done():
                self.totals.join_timeouts += 1
                p.done.set_result((ErrorCode.PUBLISH_TIMEOUT,
                                   "the room did not answer the join in time; retry"))
                del self._pending[key]

    # -- the owner's side -------------------------------------------------------------

    def on_entry(self, room: str, body: bytes) -> None:
        """A stream entry of game room ``room`` (an encoded MESSAGE) reached its fan-out
        point here; feed it to the handler if this edge runs the room.

        Never raises: it runs in the middle of the room machine's commands (the append
        of this very entry may come after it), so a fault here is logged and fails the
        game room, not the room's stream."""
        try:
            self._entry(room, body)
        except Exception:
            log.exception("game room input failed", extra={"room": room})
            g = self.rooms.get(room)
            if g is not None:
                self.totals.failed += 1
                self._dispose(room, g)

    def _entry(self, room: str, body: bytes) -> None:
        r = self.hub.rooms.get(room)
        if r is None or not r.machine.mine:
            return
        buf = self.cont.moving.get(room)  # captured for a drain: the next owner's
        if buf is None:
            buf = self.cont.restoring.get(room)
        if buf is not None:
            buf.append(body)  # after the stream's entries, once they are replayed
            return
        msg = decode(body)
        assert isinstance(msg, Message)
        pos = (msg.epoch, msg.seq)
        ev = event_of(msg.sender, msg.payload, pos)
        g = self.rooms.get(room)
        if ev is None:
            return
        if type(ev) is ge.TickMark:
            if g is not None:
                self.cont.marks[room] = pos
            return
        if g is None:
            if type(ev) is not ge.JoinInput:
                return  # not running here: no player to apply it to
            g = self._start(room, ev.options, msg.epoch)
        self.cont.fed[room] = self.cont.fed.get(room, 0) + 1
        self._feed(room, g, ev)

    def _start(self, room: str, options: dict[str, Any], epoch: int) -> GameRoom:
        cls = self.registry.match(room)
        assert cls is not None
        g = GameRoom(room, cls(), self.cfg)
        self.rooms[room] = g
        self.cont.fed[room] = 0
        self.totals.started += 1
        log.info("game room started", extra={"room": room, "handler": cls.__qualname__})
        self._feed(room, g, ge.Start(options, zlib.crc32(f"{room}:{epoch}".encode())))
        return g

    def on_machine_state(self, room: str, m: RoomMachine[Any]) -> None:
        """The room machine of game room ``room`` changed state: a handler runs only
        while it is ours (OWNED or LOCAL).  Becoming ours starts a restore; ceasing
        to be stops the handler without ending the game (it goes on at the next owner),
        unless the room closed here with no player left in the game: then it is over
        and its snapshot is dropped."""
        from edge_node.rooms.machine import RoomState
        if m.mine:
            # A handover that failed: the room stays here; what was fed during the
            # attempt (maybe not stored yet) follows the restore.
            moved = self.cont.moving.pop(room, [])
            if room not in self.rooms and room not in self.cont.restoring:
                self.cont.restoring[room] = moved
                spawn(self.cont.restore(room, time.monotonic()), name=f"restore {room}")
            return
        self.cont.restoring.pop(room, None)
        if m.state is not RoomState.HANDING_OVER:  # (a handover may still fail)
            self.cont.moving.pop(room, None)
        g = self.rooms.get(room)
        if g is None:
            return
        over = (m.state is RoomState.CLOSED and not m.handed_to
                and (not g.players or g.phase is not GamePhase.RUNNING))
        if over:
            spawn(self.hub.store.drop_snapshot(room))
        else:
            log.info("game room stopped here: ownership moved",
                     extra={"room": room, "state": m.state.value})
        self._feed(room, g, ge.Stop("ownership moved", moved=not over))

    def on_live(self, room: str, kind: int, body: list[Any]) -> None:
        """Game traffic from another edge on the room's live channel."""
        if kind == LIVE_GAME:
            to, exclude, frame = body
            self._deliver_local(room, to or None, bytes(frame), exclude or None)
        elif kind == LIVE_GAME_VERDICT:
            player, req_id, code, text = body
            self._verdict(str(player), int(req_id), room, int(code), str(text))
        elif kind == LIVE_GAME_RESYNC and room in self.rooms:
            self._feed(room, self.rooms[room], ge.Resync(str(body[0])))

    # -- running the machines -----------------------------------------------------------

    def _feed(self, room: str, g: GameRoom, event: ge.GameEvent) -> None:
        self._run(room, g, g.handle(event, asyncio.get_running_loop().time()))
        self._schedule(room, g)

    def _schedule(self, room: str, g: GameRoom) -> None:
        due = g.next_deadline()
        timer = self._timers.get(room)
        if timer is not None and (due is None or timer[1] != due):
            timer[0].cancel()
            timer = None
            del self._timers[room]
        if due is not None and timer is None:
            handle = asyncio.get_running_loop().call_at(due, self._on_timer, room)
            self._timers[room] = (handle, due)

    def _on_timer(self, room: str) -> None:
        self._timers.pop(room, None)
        g = self.rooms.get(room)
        if g is None:
            return
        try:
            self._tick(room, g)
        except Exception:  # a bug of ours, not the handler's (the machine catches those)
            log.exception("game room tick failed", extra={"room": room})
            self.totals.failed += 1
            self._dispose(room, g)

    def _tick(self, room: str, g: GameRoom) -> None:
        loop = asyncio.get_running_loop()
        n = len(g.stats.lateness)
        ticks_before = g.ticks
        t0 = time.perf_counter()
        cmds = g.handle(ge.Timer(), loop.time())
        spent = time.perf_counter() - t0
        cmds += g.handle(ge.TickTime(spent), loop.time())
        if self.observe_tick is not None:
            self.observe_tick(spent)
        if self.observe_lateness is not None and len(g.stats.lateness) != n:
            self.observe_lateness(g.stats.lateness[-1])
        self._run(room, g, cmds)
        self._schedule(room, g)
        if room in self.cont.unsaved:
            self.cont.save_soon(room)
        ticked = self.cont.after_tick.get(room)
        if ticked is not None and not ticked.done() and g.ticks != ticks_before:
            ticked.set_result(None)

    def _run(self, room: str, g: GameRoom, cmds: list[ge.GameCommand]) -> None:
        for c in cmds:
            t = type(c)
            if t is ge.Deliver:
                self._deliver(room, c.to, c.body, c.exclude)  # type: ignore[union-attr]
            elif t is ge.Mark:
                self.cont.mark(room, c.tick)  # type: ignore[union-attr]
            elif t is ge.SnapshotDue:
                self.cont.snapshot_due(room, g)
            elif t is ge.JoinVerdict:
                assert isinstance(c, ge.JoinVerdict)
                if c.edge == self.edge_id:
                    self._verdict(c.player, c.req_id, room, c.code, c.text)
                else:
                    self.hub.store.publish_live(room, LIVE_GAME_VERDICT,
                                                [c.player, c.req_id, c.code, c.text])
            elif t is ge.InputError:
                assert isinstance(c, ge.InputError)
                self.hub.stats.errors[c.code] += 1
                self._deliver(room, c.player, encode(Error(0, c.code, f"{room}: {c.text}")),
                              None)
            elif t is ge.RoomFailed:
                assert isinstance(c, ge.RoomFailed)
                self.totals.failed += 1
                # Over: no later owner may bring it back from an older snapshot.
                self.cont.unsaved.pop(room, None)
                spawn(self.hub.store.drop_snapshot(room))
                self.hub.stats.errors[c.code] += 1
                log.error("game room failed", extra={"room": room, "error": c.text})
                self._deliver(room, None, encode(Error(0, c.code, f"{room}: {c.text}")), None)
            elif t is ge.Disposed:
                self._dispose(room, g)

    def _dispose(self, room: str, g: GameRoom) -> None:
        if self.rooms.get(room) is g:
            del self.rooms[room]
            self.hub.store.put_listing(room, None)
            for d in (self.cont.marks, self.cont.unsaved, self.cont.saved, self.cont.fed):
                d.pop(room, None)
        timer = self._timers.pop(room, None)
        if timer is not None:
            timer[0].cancel()
        self.totals.done.add(g.stats)

    def _deliver(self, room: str, to: str | None, body: bytes, exclude: str | None) -> None:
        g = self.rooms.get(room)
        where = g.edges if g is not None else {}
        self._deliver_local(room, to, body, exclude)
        if to is None:
            remote = any(e != self.edge_id for p, e in where.items() if p != exclude)
        else:
            remote = where.get(to, self.edge_id) != self.edge_id
        if remote:
            self.hub.store.publish_live(room, LIVE_GAME, [to or "", exclude or "", body])

    def _deliver_local(self, room: str, to: str | None, body: bytes,
                       exclude: str | None) -> None:
        players = self.local.get(room)
        r = self.hub.rooms.get(room)
        if not players or r is None:
            return
        members = r.members
        n = 0
        frame: bytes | None = None  # WebSocket framing once for every player here
        for sid in ((to,) if to is not None else players):
            if sid == exclude or sid not in players:
                continue
            s = members.get(sid)
            if s is None or s.closed:
                continue
            out = s.out
            if out.framed and isinstance(out, Outbound):
                if frame is None:
                    frame = ws_binary_frame(body)
                out.push_framed(frame, True)
            else:
                out.push(body)
            n += 1
        self.hub.stats.deliveries += n
        self.hub.stats.delivered_bytes += n * len(body)

    def close(self) -> None:
        """Stop every game room (the edge is stopping)."""
        for room, g in list(self.rooms.items()):
            self._run(room, g, g.handle(ge.Stop("edge stopping", moved=True), 0.0))
        for key, p in list(self._pending.items()):
            if not p.done.done():
                p.done.set_result((ErrorCode.SHUTTING_DOWN, "the edge is stopping"))
            del self._pending[key]
