"""Game rooms that outlive their edge: marks, snapshots, restore and live moves.

The owner side of game-room continuity on one edge (the room logic is sans-I/O in
:mod:`edge_node.games.room` and :mod:`edge_node.games.continuity`; this is the I/O):

- **Marks.**  A tick that applied inputs, and at least every ``mark_interval``, appends
  a ``$tick`` entry to the room's stream at once (:meth:`GameContinuity.mark`, the
  owner's own publish, like ``$join``): the inputs before it were offered at that tick.
- **Snapshots.**  Every ``snapshot_interval`` the room is captured between two ticks
  and sealed (:mod:`edge_node.games.snapshot`); once the stream holds the last mark
  (the room machine's durable position), it is stored, fenced by the room's lease
  (:meth:`~edge_node.store.base.RoomStore.put_snapshot`), which trims the stream
  behind the previous snapshot.  One write per room is in flight at a time.
- **Restore.**  An edge that becomes a game room's owner (after a crash, a drain's
  handover, a lease won back) loads the snapshot and the stream after it, replays them
  tick by tick, then ticks on; stream entries that arrive meanwhile wait and follow
  (those the read already held are skipped by position).  No snapshot: the next
  ``$join`` starts a fresh room.  A snapshot that does not load (bad signature,
  another handler class): counted, logged, a fresh room.
- **Live move.**  On a drain, :meth:`GameContinuity.hand_over` captures the room
  between two ticks (``final``) and stores it *before* the lease moves; entries fed
  after the capture are left in the stream for the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Message, decode, pack_input, unpack_input
from edge_node.config import DEV_SECRET
from edge_node.games import events as ge
from edge_node.games.continuity import restore, take_snapshot
from edge_node.games.room import GamePhase, GameRoom
from edge_node.games.snapshot import (
    RoomSnapshot,
    SnapshotInvalid,
    SnapshotTooLarge,
    seal,
    snapshot_key,
    unseal,
)
from edge_node.rooms.events import Pos
from edge_node.runtime.tasks import spawn
from edge_node.store.base import StoreUnavailable

if TYPE_CHECKING:
    from edge_node.fanout.games import GameHost

__all__ = ["GameContinuity", "event_of"]

log = logging.getLogger("edge_node.fanout.games")


class GameContinuity:
    """Continuity of the game rooms one edge owns (see the module docstring).
    ``secrets``: the edge secrets (snapshot MAC keys derive from them; the first
    seals).  ``snapshot_ttl``: seconds a stored snapshot outlives its last refresh."""

    def __init__(self, host: GameHost, secrets: tuple[bytes, ...] = (),
                 snapshot_ttl: float = 600.0) -> None:
        self.host = host
        #: Snapshot MAC keys (from the edge secrets; the first seals), and how long a
        #: stored snapshot outlives its last refresh (an abandoned game's goes away).
        self.keys = tuple(snapshot_key(k) for k in (secrets or (DEV_SECRET,)))
        self.snapshot_ttl_ms = int(snapshot_ttl * 1000)
        #: Owner side: room -> position of its last ``$tick`` mark.
        self.marks: dict[str, Pos] = {}
        #: Rooms being restored -> stream entries (encoded MESSAGEs) fed meanwhile.
        self.restoring: dict[str, list[bytes]] = {}
        #: Rooms captured for a drain -> the entries fed since (they belong to the next
        #: owner; kept in case the handover fails and the room stays here).
        self.moving: dict[str, list[bytes]] = {}
        #: room -> a captured snapshot waiting for its mark to be durable, and the
        #: rooms with a store write in flight.
        self.unsaved: dict[str, tuple[Pos, bytes, float, int]] = {}
        self.saving: set[str] = set()
        #: room -> (monotonic time, entries fed) at its last stored snapshot's capture;
        #: entries fed since it started here.
        self.saved: dict[str, tuple[float, int]] = {}
        self.fed: dict[str, int] = {}
        #: Drains waiting for a room's next tick to capture it right after (room ->
        #: future, set by the host after the tick).
        self.after_tick: dict[str, asyncio.Future[None]] = {}
        #: Observer of restore times (seconds, owning the room to ticking), set by the
        #: metrics.
        self.observe_restore: Any = None


    async def restore(self, room: str, t0: float) -> None:
        """This edge became ``room``'s owner: rebuild the game from its snapshot and
        the stream after it, then feed what arrived meanwhile.  While the store cannot
        be reached the read is retried (backoff to 2 s) as long as the room is ours:
        starting afresh would let a new game overwrite the stored one.  A room run
        without a store (LOCAL) starts afresh at once."""
        from edge_node.rooms.machine import RoomState

        buf = self.restoring.get(room)
        if buf is None:
            return
        snap: RoomSnapshot | None = None
        entries: list[Any] = []
        pos: Pos = (0, 0)
        delay = 0.1
        while True:
            r = self.host.hub.rooms.get(room)
            if self.restoring.get(room) is not buf or r is None or not r.machine.mine:
                return  # ownership moved meanwhile (a new restore may have begun)
            if r.machine.state is RoomState.LOCAL:
                break
            try:
                got = await self.host.hub.store.get_snapshot(room)
                if got is not None:
                    pos, data = got
                    snap = self._checked(room, pos, unseal(data, self.keys))
                    entries = await self.entries_after(room, pos)
                break
            except StoreUnavailable as exc:
                log.warning("game room snapshot unreachable: retrying",
                            extra={"room": room, "error": str(exc), "in_s": delay})
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
            except SnapshotInvalid as exc:
                self.host.totals.restore_failures += 1
                log.error("game room snapshot refused: the room starts afresh",
                          extra={"room": room, "error": str(exc)})
                snap = None
                break
        if self.restoring.get(room) is not buf:
            return
        del self.restoring[room]
        r = self.host.hub.rooms.get(room)
        if r is None or not r.machine.mine:
            return
        last = self.replay(room, snap, pos, entries, r.machine.epoch) if snap else None
        if last is None:
            self.host.totals.fresh += 1
            last = (0, 0)
        else:
            took = self.host.totals.restore_seconds = time.monotonic() - t0
            if self.observe_restore is not None:
                self.observe_restore(took)
        for body in buf:  # fed while the stream was read: whatever it did not hold
            msg = decode(body)
            if isinstance(msg, Message) and (msg.epoch, msg.seq) > last:
                self.host._entry(room, body)

    @staticmethod
    def _checked(room: str, pos: Pos, snap: RoomSnapshot) -> RoomSnapshot:
        """The sealed header must name this room and the stored position (a snapshot
        moved to another room's key, or its position rewritten, is refused)."""
        if snap.room != room or snap.pos != tuple(pos):
            raise SnapshotInvalid(f"snapshot of {snap.room!r} at {list(snap.pos)} stored "
                                  f"for {room!r} at {list(pos)}")
        return snap

    async def entries_after(self, room: str, pos: Pos) -> list[Any]:
        """The stream's entries after ``pos``; across a gap (entries trimmed or lost)
        the reading goes on from the first entry still held (counted, logged)."""
        out: list[Any] = []
        chunk = 5000
        while True:
            records, gap, first = await self.host.hub.store.history_after(room, *pos, chunk)
            if gap:
                self.host.totals.restore_gaps += 1
                log.error("game room stream has a gap after its snapshot: inputs lost",
                          extra={"room": room, "after": list(pos),
                                 "resumes_at": list(first) if first else None})
                if first is None or first <= pos:
                    return out
                pos = (first[0], first[1] - 1) if first[1] > 0 else (first[0] - 1, 1 << 62)
                continue
            out += records
            if len(records) < chunk:
                return out
            pos = (records[-1].epoch, records[-1].seq)

    def replay(self, room: str, snap: RoomSnapshot, pos: Pos, entries: list[Any],
               epoch: int) -> Pos | None:
        """Restore ``room`` from ``snap`` and replay ``entries``; the last position
        replayed, or None (the snapshot did not restore: a fresh room at the next
        join)."""
        cls = self.host.registry.match(room)
        assert cls is not None
        try:
            g = restore(snap, cls, self.host.cfg)
        except SnapshotInvalid as exc:
            self.host.totals.restore_failures += 1
            log.error("game room snapshot does not restore: the room starts afresh",
                      extra={"room": room, "error": str(exc)})
            return None
        now = asyncio.get_running_loop().time()
        last, mark, fed = pos, pos, 0
        try:
            for rec in entries:
                last = (rec.epoch, rec.seq)
                ev = event_of(rec.sender, rec.payload, last)
                if ev is not None:
                    g.handle(ev, now)  # replay: no output
                    if type(ev) is ge.TickMark:
                        mark = last
                    else:
                        fed += 1
        except Exception:  # a bug of ours (the machine contains the handler's)
            self.host.totals.restore_failures += 1
            log.exception("game room replay failed: the room starts afresh",
                          extra={"room": room})
            return None
        self.host.rooms[room] = g
        self.marks[room] = mark
        self.fed[room] = fed
        self.saved[room] = (time.monotonic(), 0)
        self.host.totals.restores += 1
        self.host.totals.replayed_entries += len(entries)
        self.host._run(room, g, g.handle(ge.GoLive(epoch), now))
        if g.final:
            self.host.totals.moved_in += 1
        log.info("game room restored", extra={
            "room": room, "tick": g.ticks, "replayed": len(entries), "final": g.final,
            "players": len(g.players)})
        self.host._schedule(room, g)
        return last

    def mark(self, room: str, tick: int) -> None:
        r = self.host.hub.rooms.get(room)
        if r is None or not r.machine.mine:
            return
        self.host.totals.marks += 1
        self.host.hub.publish(self.host._marker, room, pack_input("$tick", {"t": tick}), True,
                         next(self.host._req), 0)

    def capture(self, room: str, g: GameRoom, mark: Pos,
                final: bool = False) -> bytes | None:
        """Seal a snapshot of ``g`` covering the stream up to ``mark`` (None if it
        cannot be: counted and logged)."""
        t0 = time.perf_counter()
        r = self.host.hub.rooms.get(room)
        epoch = r.machine.epoch if r is not None else 0
        try:
            data = seal(take_snapshot(g, final, mark, epoch), self.keys[0],
                        self.host.cfg.max_snapshot_bytes)
        except SnapshotTooLarge as exc:
            self.host.totals.snapshot_failures += 1
            log.warning("game room snapshot not stored", extra={"room": room,
                                                                 "error": str(exc)})
            return None
        except Exception as exc:  # not picklable: the handler holds a lambda, a socket...
            self.host.totals.snapshot_failures += 1
            log.warning("game room snapshot not possible: its handler holds something "
                        "that cannot be pickled", extra={
                            "room": room, "error": f"{type(exc).__name__}: {exc}"})
            return None
        self.host.totals.capture_seconds = time.perf_counter() - t0
        return data

    def snapshot_due(self, room: str, g: GameRoom) -> None:
        mark = self.marks.get(room)
        if mark is None or room in self.saving or g.phase is not GamePhase.RUNNING:
            return  # (a room that failed in this very tick is never stored)
        data = self.capture(room, g, mark)
        if data is not None:
            self.unsaved[room] = (mark, data, time.monotonic(), self.fed.get(room, 0))
            self.save_soon(room)

    def save_soon(self, room: str) -> None:
        """Store the captured snapshot once the stream holds its mark."""
        got = self.unsaved.get(room)
        r = self.host.hub.rooms.get(room)
        if got is None or room in self.saving or r is None:
            return
        if r.machine.durable < got[0]:
            return  # tried again after the next tick
        del self.unsaved[room]
        self.saving.add(room)
        spawn(self.save(room, *got))

    async def save(self, room: str, mark: Pos, data: bytes, at: float, fed: int) -> bool:
        try:
            ok = await self.host.hub.store.put_snapshot(room, mark, data, self.snapshot_ttl_ms)
        except StoreUnavailable as exc:
            ok = False
            log.warning("game room snapshot not stored", extra={"room": room,
                                                                 "error": str(exc)})
        finally:
            self.saving.discard(room)
        if ok:
            self.host.totals.snapshots += 1
            self.host.totals.snapshot_bytes = len(data)
            if room in self.host.rooms:
                self.saved[room] = (at, fed)
        else:
            self.host.totals.snapshot_failures += 1
        return ok

    async def hand_over(self, room: str) -> None:
        """Drain: before ``room``'s lease moves, capture the game between two ticks and
        store it (``final``: the next owner goes on from the next tick and players from
        their last patch).  Inputs fed from here on are left in the stream for the
        next owner.  A snapshot that cannot be stored leaves the older one (the next
        owner then restores as after a crash)."""
        g = self.host.rooms.get(room)
        if g is None or g.phase is not GamePhase.RUNNING:
            return
        # Right after a tick (and its patch): the players' silence is then the move
        # alone, not the move plus the time since the last tick.
        ticked = self.after_tick[room] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(ticked, 2 * g.interval + 0.05)
        except TimeoutError:
            pass
        finally:
            self.after_tick.pop(room, None)
        if self.host.rooms.get(room) is not g or g.phase is not GamePhase.RUNNING:
            return
        self.moving[room] = []
        self.unsaved.pop(room, None)
        mark = self.marks.get(room)
        data = self.capture(room, g, mark, final=True) if mark is not None else None
        self.host._run(room, g, g.handle(ge.Stop("handed over", moved=True), 0.0))
        if mark is None or data is None:
            return
        with contextlib.suppress(StoreUnavailable):
            await self.host.hub.store.flush()  # the mark and the inputs before it, stored
        for _ in range(50):  # a snapshot write of the room's own may be in flight
            if room not in self.saving:
                break
            await asyncio.sleep(0.01)
        self.saving.add(room)
        if await self.save(room, mark, data, time.monotonic(), 0):
            self.host.totals.handovers += 1


def event_of(sender: str, payload: bytes, pos: Pos) -> ge.GameEvent | None:
    """The game event of one stream entry of a game room (None: not one: a foreign
    writer's).  ``$tick`` entries are :class:`~edge_node.games.events.TickMark`."""
    try:
        kind, value = unpack_input(payload)
    except ValueError:
        return None  # the edge checks inputs before publishing: only a foreign writer
    if kind == "$tick":
        return ge.TickMark(int(value["t"])) if isinstance(value, dict) and "t" in value \
            else None
    if kind == "$join":
        if not isinstance(value, dict):
            return None
        return ge.JoinInput(sender, str(value.get("subject", "")), value.get("options") or {},
                            int(value.get("req", 0)), str(value.get("edge", "")), pos)
    if kind == "$leave":
        return ge.LeaveInput(sender, pos)
    return ge.MessageInput(sender, kind, value, len(payload), pos)
