"""Rooms on one edge: membership, local fan-out, and the driver of the room machines.

Each room's continuity state (owner, positions, durability, forwarded publishes,
duplicate detection, resume ring) lives in one sans-I/O
:class:`~edge_node.rooms.machine.RoomMachine`.  The :class:`Hub` is its driver: it
turns what happens (a publish from a member, a store notice from
:class:`~edge_node.store.redis_sync.RoomSync`, time passing) into machine events, and
its :class:`~edge_node.fanout.driver.MachineDriver` feeds them and executes the
commands that come back: fan-out to the members here, appends and forwards through
the store, acknowledgements and errors to publishers.  A room's members and fan-out
targets are a :class:`~edge_node.fanout.room.Room`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as _Tally
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import (
    Delivery,
    Member,
    Resumed,
    encode,
    room_allowed,
)
from edge_node.fanout.driver import MachineDriver
from edge_node.fanout.presence import PresenceTeller, members_of, relay_presence
from edge_node.fanout.room import Machine, Room, SessionLike, default_delivery
from edge_node.rooms import events as ev
from edge_node.rooms.events import Record
from edge_node.rooms.machine import RoomMachine, RoomSettings, RoomState
from edge_node.rooms.replay import History, needs_history, not_recovered, plan_resume
from edge_node.runtime.metrics import EdgeMetrics
from edge_node.runtime.tasks import spawn
from edge_node.store.base import RoomStore, StoreUnavailable
from edge_node.store.memory import MemoryBackend, MemoryRoomStore
from edge_node.store.records import (
    LIVE_GAME,
    LIVE_PRESENCE_JOIN,
    LIVE_PRESENCE_LEAVE,
    LIVE_UNRELIABLE,
)
from edge_node.store.types import Lease

if TYPE_CHECKING:
    from edge_node.fanout.games import GameHost
    from edge_node.functions.host import FunctionHost

__all__ = ["Hub", "Room", "SessionLike", "HubSettings"]

log = logging.getLogger("edge_node.fanout.hub")

Pos = tuple[int, int]
#: The hub's tunables are the rooms' (see :class:`~edge_node.rooms.machine.RoomSettings`).
HubSettings = RoomSettings


class Hub:
    """All rooms of one edge.  ``store`` is where room state is shared between edges:
    :class:`~edge_node.store.redis_sync.RoomSync` (Redis) once the server sets it, else an
    in-memory store of this edge alone (:class:`~edge_node.store.memory.MemoryRoomStore`).
    """

    def __init__(self, edge_id: str, metrics: EdgeMetrics,
                 settings: RoomSettings | None = None) -> None:
        self.edge_id = edge_id
        self.metrics = metrics
        self.stats = metrics.stats
        self.cfg = settings or RoomSettings()
        self.rooms: dict[str, Room] = {}
        self._driver = MachineDriver(
            self.rooms, metrics, MemoryRoomStore(MemoryBackend(), edge_id, self, metrics.stats),
            settle=self._settle, reactivate=self._reactivate)
        self._activating: dict[str, asyncio.Future[None]] = {}
        # edge_rooms_by_state, read at scrape time.
        metrics.room_states = lambda: dict(_Tally(r.machine.state.name
                                                  for r in self.rooms.values()))
        #: While draining, rooms left empty are handed (not released) to the edge
        #: their last member moved to: ``handoff_target(session_id) -> edge id``.
        self.draining = False
        self.handoff_target: Callable[[str], str | None] | None = None
        #: The room patterns whose messages go up to the origin (with an uplink).
        self.uplink_rooms: tuple[str, ...] = ()
        #: Rooms' default delivery policies: the first ``(pattern, policy)`` whose
        #: pattern matches (else ``all``); a member's JOIN may choose its own.
        self.room_delivery: tuple[tuple[str, Delivery], ...] = ()
        self._uplinked: dict[str, bool] = {}
        self._driver.to_origin = self._to_origin
        self.presence_news = PresenceTeller(self)  # a lost member's leave: recorded late

    # -- where the commands go; the lease work the driver hands back ------------

    @property
    def store(self) -> RoomStore:
        """Where room state is shared between edges (set it to change it)."""
        return self._driver.store

    @store.setter
    def store(self, store: RoomStore) -> None:
        self._driver.store = store

    @property
    def games(self) -> GameHost | None:
        """The edge's game rooms (None: no room handler configured; set it to change)."""
        return self._driver.games

    @games.setter
    def games(self, games: GameHost | None) -> None:
        self._driver.games = games

    @property
    def functions(self) -> FunctionHost | None:
        """The edge's functions (None: none loaded; set it to change it): they get
        presence events here and message events from the driver."""
        return self._driver.functions

    @functions.setter
    def functions(self, functions: FunctionHost | None) -> None:
        self._driver.functions = functions

    @property
    def uplink(self) -> Any:
        """The uplink to the origin (None: none; set it to change it)."""
        return self._driver.uplink

    @uplink.setter
    def uplink(self, uplink: Any) -> None:
        self._driver.uplink = uplink

    async def _recent(self, name: str, count: int) -> tuple[Record, ...]:
        try:
            return tuple(await self.store.recent(name, count))
        except StoreUnavailable:
            return ()

    async def _settle(self, room: Room, count: int) -> None:
        """Rebuild duplicate detection from the stream, then own the room."""
        records = await self._recent(room.name, count)
        self._driver.feed(room.name, room, room.machine, ev.RecentLoaded(records))

    async def _reactivate(self, room: Room, since: Pos | None) -> None:
        """Fenced: ask for the lease again (Redis may be failing over right now: keep
        trying while the room is used, or it would stay owner-less here for good)."""
        store, name, m = self.store, room.name, room.machine
        delay = 0.1
        while self.rooms.get(name) is room:
            try:
                lease = await store.activate(name, since=since)
            except StoreUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self.rooms.get(name) is room:
                self._driver.feed(name, room, m, self._lease_event(name, lease))
            elif name not in self.rooms and name not in self._activating:
                spawn(store.deactivate(name))  # closed meanwhile: do not keep the lease
            return

    def _lease_event(self, name: str, lease: Lease) -> ev.LeaseResult:
        return ev.LeaseResult(lease.owner_edge, lease.epoch, lease.mine,
                              (lease.last_epoch, lease.last_seq), self.store.last_queued(name))

    def tick(self, now: float) -> None:
        """Feed :class:`~edge_node.rooms.events.Timer` to every room whose deadline
        passed (forwarded publishes waiting too long, lingering empty rooms).  Call a
        few times per second."""
        self._driver.tick(now)
        if self.games is not None:
            self.games.tick(now)
        for name in self.presence_news.tick(now):  # a held leave told, or ended elsewhere
            room = self.rooms.get(name)
            if room is not None and not room.members:
                self._driver.feed(name, room, room.machine, ev.Emptied(self.draining, None))

    # -- membership ---------------------------------------------------------

    async def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        while room is None:
            pending = self._activating.get(name)
            if pending is not None:
                await asyncio.shield(pending)
                room = self.rooms.get(name)
            else:
                room = await self._activate(name)
        if room.machine.linger_at is not None:
            self._driver.feed(name, room, room.machine, ev.Occupied())
        return room

    async def ensure_room(self, name: str) -> None:
        """Have room ``name`` active here without a member (for the edge's own
        publishes, e.g. IoT alerts): it then stays active.  Raises what activation
        raises only for a bug; an unreachable store runs it locally."""
        await self._room(name)

    def _add(self, s: SessionLike, room: Room, flags: int) -> None:
        room.add(s, flags)
        self.presence_news.joined(room, s.member)

    async def join(self, s: SessionLike, name: str, flags: int) -> Pos:
        """Add ``s`` to room ``name``; return the room's current position (the same
        from every edge)."""
        room = await self._room(name)
        self._add(s, room, flags)
        return room.machine.position()

    async def _activate(self, name: str) -> Room:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._activating[name] = fut
        try:
            m: Machine = RoomMachine(name, self.edge_id, self.cfg,
                                     to_origin=self._uplinks(name),
                                     count_duplicate=self._count_duplicate)
            try:
                lease = await self.store.activate(name)
            except StoreUnavailable as exc:
                # Local first: keep serving with an unsynced epoch 0.
                log.warning("room activated without Redis",
                            extra={"room": name, "error": str(exc)})
                cmds = self._driver.handle(m, ev.RunLocal(0), time.monotonic())
            else:
                cmds = self._driver.handle(m, self._lease_event(name, lease), time.monotonic())
                load = next((c for c in cmds if isinstance(c, ev.LoadRecent)), None)
                if load is not None:
                    records = await self._recent(name, load.count)
                    cmds = self._driver.handle(m, ev.RecentLoaded(records), time.monotonic())
            room = Room(name, m, game=self.games is not None and self.games.is_game(name),
                        delivery=default_delivery(self.room_delivery, name))
            self.rooms[name] = room
            self.stats.rooms = len(self.rooms)
            self._driver.run(name, room, cmds)
            return room
        finally:
            del self._activating[name]
            fut.set_result(None)

    def _count_duplicate(self) -> None:
        self.stats.duplicates_dropped += 1

    def leave(self, s: SessionLike, name: str, quiet: bool = False,
              lost: bool = False) -> bool:
        """Remove ``s`` from room ``name``; False if it was not a member.

        ``quiet``: the session moved to another edge (handoff), so it is still a
        member of the room: no presence leave event.  ``lost``: the connection ended
        without a normal close (the presence leave says so: the session may resume).
        """
        room = self.rooms.get(name)
        if room is None or not room.remove(s.session_id):
            return False
        if room.game and not quiet and self.games is not None:
            self.games.leave(s, name)
        if not quiet:
            self.presence_news.left(room, s.member, lost, time.monotonic())
        if not room.members and not self.presence_news.grace.holds(name):
            target = None
            if self.draining and self.handoff_target is not None:
                target = self.handoff_target(s.session_id)
            self._driver.feed(name, room, room.machine, ev.Emptied(self.draining, target))
        return True

    async def hand_over(self, name: str, to: str) -> bool:
        """Draining: give the lease of room ``name`` (ours) to edge ``to`` now, same
        epoch.  The room stays here as a mirror while its members move: their
        publishes are forwarded to ``to`` and its messages reach them from the
        stream.  False (the room stays ours) if the lease could not be handed."""
        room = self.rooms.get(name)
        store = self.store
        if room is None or room.machine.state is not RoomState.OWNED \
                or not room.machine.epoch or not store.owns(name):
            return False
        m = room.machine
        if room.game and self.games is not None:
            await self.games.cont.hand_over(name)  # the game's state goes with the lease
            if self.rooms.get(name) is not room or m.state is not RoomState.OWNED:
                return False
        self._driver.feed(name, room, m, ev.HandOverStart(to))
        try:
            ok = await store.hand_over(name, to, m.last)
        except StoreUnavailable as exc:
            log.warning("room handover failed", extra={"room": name, "error": str(exc)})
            ok = False
        if ok:
            self._driver.feed(name, room, m, ev.HandOverDone())
        elif self.rooms.get(name) is room:
            self._driver.feed(name, room, m, ev.HandOverFailed(store.owns(name)))
        return ok

    # -- publishing ---------------------------------------------------------

    def publish(self, s: SessionLike, name: str, payload: bytes, reliable: bool,
                req_id: int, idem: int, key: str = "") -> None:
        """Publish from a local member (membership checked); ``key``: conflation key."""
        room = self.rooms[name]
        sid = s.session_id
        if not reliable:
            self.stats.publishes["unreliable"] += 1
            self._driver.fanout_unreliable(room, sid, payload, key)
            self.store.publish_live(name, LIVE_UNRELIABLE,
                                    [sid, payload, key] if key else [sid, payload])
            return
        self.stats.publishes["reliable"] += 1
        m, driver = room.machine, self._driver
        cmds = driver.handle(m, ev.LocalPublish(s, sid, payload, req_id, idem), time.monotonic())
        driver.run(name, room, cmds)
        if m.forwarded:
            driver.timed.add(name)

    def _uplinks(self, name: str) -> bool:
        """Whether room ``name``'s durable messages leave the machine (:class:`Uplink`
        commands): for the origin, or for the functions' message handlers."""
        fn = self.functions
        return ((self.uplink is not None and self._to_origin(name))
                or (fn is not None and fn.watches("message", name)))

    def _to_origin(self, name: str) -> bool:
        hit = self._uplinked.get(name)
        if hit is None:
            if len(self._uplinked) > 100_000:
                self._uplinked.clear()
            hit = self._uplinked[name] = room_allowed(self.uplink_rooms, name)
        return hit

    # -- upcalls from RoomSync ----------------------------------------------

    def on_durable(self, room_name: str, epoch: int, seq: int) -> None:
        """A batch up to ``(epoch, seq)`` is in Redis: acknowledge its publishers and
        send origin-bound messages up."""
        durable = ev.Durable((epoch, seq))
        self._driver.feed_retired(room_name, durable)
        room = self.rooms.get(room_name)
        if room is not None:
            self._driver.feed(room_name, room, room.machine, durable)

    def on_remote_message(self, room_name: str, e: Record) -> None:
        """A message from the room stream (room owned elsewhere)."""
        room = self.rooms.get(room_name)
        if room is not None:
            self._driver.feed(room_name, room, room.machine, ev.RemoteEntry(e))

    def on_forwarded_publish(self, room_name: str, sender: str, payload: bytes,
                             origin_edge: str, req_id: int, idem: int) -> None:
        """A publish another edge forwarded to us as the room's owner."""
        room = self.rooms.get(room_name)
        m = room.machine if room is not None else self._driver.retired.get(room_name)
        if m is None:
            log.info("forwarded publish for a room we do not own; the origin will retry",
                     extra={"room": room_name, "origin": origin_edge})
            return
        if m.mine:
            self.stats.publishes["forwarded"] += 1
        self._driver.feed(room_name, room, m,
                          ev.ForwardedPublish(sender, payload, origin_edge, req_id, idem))

    def on_remote_ack(self, sender: str, req_id: int, epoch: int, seq: int) -> None:
        """The owner recognised our forwarded publish as a duplicate."""
        key = (sender, req_id)
        for name in list(self._driver.timed):
            room = self.rooms.get(name)
            if room is not None and key in room.machine.forwarded:
                self._driver.feed(name, room, room.machine,
                                  ev.RemoteAck(sender, req_id, (epoch, seq)))
                return

    def on_live(self, room_name: str, kind: int, body: list[Any]) -> None:
        """Ephemeral cross-edge traffic: presence events, unreliable messages."""
        room = self.rooms.get(room_name)
        if room is None:
            return
        if room.game and kind >= LIVE_GAME and self.games is not None:
            self.games.on_live(room_name, kind, body)
        elif kind == LIVE_UNRELIABLE:
            self._driver.fanout_unreliable(  # [sender, payload, key?]
                room, body[0], body[1], body[2] if len(body) > 2 and type(body[2]) is str else "")
        elif kind in (LIVE_PRESENCE_JOIN, LIVE_PRESENCE_LEAVE):
            if kind == LIVE_PRESENCE_JOIN:  # a session back elsewhere: no leave to record
                self.presence_news.remote_joined(room_name, body[0][0])
            relay_presence(room, kind == LIVE_PRESENCE_JOIN, body[0])

    def on_lease_lost(self, room_name: str) -> None:
        """Fenced: another edge owns the room now."""
        log.warning("lease lost", extra={"room": room_name})
        self._driver.feed_retired(room_name, ev.LeaseLost())
        room = self.rooms.get(room_name)
        if room is not None:
            self._driver.feed(room_name, room, room.machine, ev.LeaseLost())

    def on_lease_acquired(self, room_name: str, lease: Lease) -> None:
        """We took over a room whose owner went away (or was handed it on a drain)."""
        room = self.rooms.get(room_name)
        if room is None:
            return
        log.info("took over room", extra={"room": room_name, "epoch": lease.epoch})
        self._driver.feed(room_name, room, room.machine,
                          ev.LeaseAcquired(lease.epoch, (lease.last_epoch, lease.last_seq)))

    def on_owner_changed(self, room_name: str, owner_edge: str) -> None:
        """Another edge took the room over: re-send publishes still waiting."""
        room = self.rooms.get(room_name)
        if room is not None:
            self._driver.feed(room_name, room, room.machine, ev.OwnerChanged(owner_edge))

    # -- resume ---------------------------------------------------------------

    async def resume_join(self, s: SessionLike, name: str, flags: int, pos: Pos,
                          invalid: str = "") -> Resumed:
        """Re-join ``name`` for a resuming session and replay what it missed.

        Sends RESUMED, then the replayed MESSAGE frames, then adds the member so
        live traffic follows without a gap or an overlap.  A non-empty
        ``invalid`` (e.g. ``"session_expired"``: the resume window passed) joins
        at the current position with ``recovered=False`` and that reason.
        """
        room = await self._room(name)
        m = room.machine
        if room.game and self.games is not None:
            # A game room's entries are inputs, not messages: the resumed player gets
            # its whole view from the owner instead of a replay.
            r = self._finish_resume(s, room, flags, not_recovered(
                m, pos, "game_room", {"current": list(m.position())}), [])
            self.games.rejoin(s, name)
            return r
        if invalid:
            return self._finish_resume(s, room, flags, not_recovered(
                m, pos, invalid, {"current": list(m.position())}), [])
        history: History | None = None
        if needs_history(m, pos):
            try:
                entries, gap, first = await self.store.history_after(
                    name, pos[0], pos[1], self.cfg.max_replay + 1)
                history = History(tuple(entries), gap, first)
            except StoreUnavailable:
                history = History(unavailable=True)
        # From here on no await: the ring tail and the live stream join seamlessly.
        r, bodies = plan_resume(m, s.session_id, pos, history)
        return self._finish_resume(s, room, flags, r, bodies)

    def _finish_resume(self, s: SessionLike, room: Room, flags: int, r: Resumed,
                       bodies: list[bytes]) -> Resumed:
        s.send(encode(r))
        for b in bodies:
            s.out.push(b)
        self.stats.replayed += len(bodies)
        self.stats.recoveries["recovered" if r.recovered else "not_recovered"] += 1
        self._add(s, room, flags)
        return r

    # -- presence -----------------------------------------------------------

    async def presence(self, name: str) -> list[Member]:
        """Members of ``name`` on this edge and, via the store, on the others."""
        return await members_of(self.store, self.rooms.get(name), name)

    def position(self, name: str) -> Pos:
        """Current position of a room on this edge (``(0, 0)`` if unknown)."""
        room = self.rooms.get(name)
        return room.machine.position() if room else (0, 0)
