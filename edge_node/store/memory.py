"""An in-process :class:`~edge_node.store.base.RoomStore`: the room state of an edge
without Redis, and of tests that run several edges' hubs in one process.

Edges that share one :class:`MemoryBackend` behave as edges sharing one Redis: one
lease per room with an epoch counter and fencing, an ordered capped history per room,
publishes forwarded to the owner, mirrors reading new records, lease handover, and
takeover when the owner is gone (:meth:`MemoryBackend.kill`: its leases lapse at once,
where Redis waits for the lease to expire).  Nothing is persisted.

Upcalls to the listener are never made from inside a call into the store: they run
from the event loop (``call_soon``), as the Redis store's background tasks do.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edge_node.rooms.events import Pos, Record
from edge_node.store.records import Forwarded, unpack_record
from edge_node.store.types import Lease, SyncListener

__all__ = ["MemoryBackend", "MemoryRoomStore"]


@dataclass(slots=True)
class _Room:
    owner: str | None = None  # lease token "edge_id:epoch"
    epoch: int = 0  # epoch counter: +1 per new lease
    log: deque[tuple[int, int, bytes]] = field(default_factory=deque)
    last_id: Pos = (0, 0)  # last position ever appended (trimmed or not)
    added: int = 0
    members: dict[str, list[str]] = field(default_factory=dict)
    #: Newest game-room snapshot: (position, data, monotonic expiry deadline).
    snapshot: tuple[Pos, bytes, float] | None = None

    def last(self) -> Pos:
        return self.last_id


class MemoryBackend:
    """The shared state: rooms, and the stores (edges) that are alive."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self.maxlen = maxlen
        self.rooms: dict[str, _Room] = {}
        self.edges: dict[str, MemoryRoomStore] = {}
        #: Game-room listings (see RoomStore.put_listing).
        self.listings: dict[str, bytes] = {}

    def room(self, name: str) -> _Room:
        r = self.rooms.get(name)
        if r is None:
            r = self.rooms[name] = _Room()
        return r

    def kill(self, edge_id: str) -> None:
        """Edge ``edge_id`` died (nothing flushed, nothing released): its leases lapse
        and the edges that read its rooms take them over."""
        self.edges.pop(edge_id, None)
        for r in self.rooms.values():
            if r.owner is not None and r.owner.rpartition(":")[0] == edge_id:
                r.owner = None
        for store in list(self.edges.values()):
            store._soon(store._take_lapsed)

    def lapse(self, name: str) -> None:
        """The room's lease expires now (for tests: an owner frozen past its lease)."""
        self.room(name).owner = None


class MemoryRoomStore:
    """One edge's view of a :class:`MemoryBackend` (see :class:`~.base.RoomStore`)."""

    def __init__(self, backend: MemoryBackend, edge_id: str, listener: SyncListener,
                 stats: Any = None) -> None:
        self.backend = backend
        self.edge_id = edge_id
        self.listener = listener
        self.stats = stats
        self._owned: dict[str, str] = {}  # room -> lease token
        self._tails: dict[str, Pos] = {}  # mirrored room -> last position delivered
        self._owners: dict[str, str] = {}  # mirrored room -> owner edge
        self._appends: dict[str, list[tuple[int, int, bytes]]] = {}
        self._forwards: list[tuple[str, Forwarded]] = []
        self._flush_due = False
        backend.edges[edge_id] = self  # alive from now on

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to connect: the store joined its backend when it was made."""

    async def stop(self) -> None:
        """Store what is queued, release every lease, leave the backend."""
        self._flush_now()
        for room, tok in list(self._owned.items()):
            r = self.backend.room(room)
            if r.owner == tok:
                r.owner = None
        self._owned.clear()
        self._tails.clear()
        if self.backend.edges.get(self.edge_id) is self:
            del self.backend.edges[self.edge_id]
        for store in list(self.backend.edges.values()):
            store._soon(store._take_lapsed)

    def _soon(self, fn: Any, *args: Any) -> None:
        asyncio.get_running_loop().call_soon(fn, *args)

    # -- leases ---------------------------------------------------------------------

    async def activate(self, room: str, since: Pos | None = None) -> Lease:
        r = self.backend.room(room)
        if r.owner is None:
            r.epoch += 1
            r.owner = f"{self.edge_id}:{r.epoch}"
        token = r.owner
        owner, _, epoch = token.rpartition(":")
        last = r.last()
        mine = owner == self.edge_id
        if mine:
            self._owned[room] = token
        else:
            self._tails[room] = since if since is not None and since < last else last
            self._owners[room] = owner
            self._soon(self._deliver, room)
        return Lease(owner, int(epoch), mine, token, last[0], last[1])

    async def deactivate(self, room: str, hand_to: str | None = None) -> None:
        self._tails.pop(room, None)
        self._owners.pop(room, None)
        tok = self._owned.get(room)
        if tok is None:
            return
        if hand_to and self._pass(room, tok, hand_to):
            return
        self._flush_now()
        r = self.backend.room(room)
        if not self._appends.get(room) and self._owned.get(room) == tok:
            del self._owned[room]
            if r.owner == tok:
                r.owner = None
                self._tell_readers(room, lambda s: s._take_lapsed())

    def owns(self, room: str) -> bool:
        return room in self._owned

    def last_queued(self, room: str) -> Pos | None:
        q = self._appends.get(room)
        return (q[-1][0], q[-1][1]) if q else None

    async def hand_over(self, room: str, to: str, last: Pos) -> bool:
        tok = self._owned.get(room)
        if tok is None or not self._pass(room, tok, to):
            return False
        self._tails[room] = last
        self._owners[room] = to
        return True

    def _pass(self, room: str, tok: str, to: str) -> bool:
        """Store what is queued, then move our lease to ``to`` with the same epoch and
        tell it (it adopts the room) and the room's readers (new owner)."""
        self._flush_now()
        r = self.backend.room(room)
        if self._appends.get(room) or r.owner != tok or to not in self.backend.edges:
            return False
        new = f"{to}:{tok.rpartition(':')[2]}"
        r.owner = new
        del self._owned[room]
        if self.stats is not None:
            self.stats.handovers += 1
        self.backend.edges[to]._soon(self.backend.edges[to]._adopt, room, new)
        self._tell_readers(room, lambda s: s._owner_changed(room, to), skip={to})
        return True

    def _tell_readers(self, room: str, fn: Any, skip: frozenset[str] | set[str] = frozenset()
                      ) -> None:
        for store in list(self.backend.edges.values()):
            if store is not self and store.edge_id not in skip and room in store._tails:
                store._soon(fn, store)

    def _adopt(self, room: str, token: str) -> None:
        if room not in self._tails or self.backend.room(room).owner != token:
            return
        self._deliver(room)
        self._own(room, token)

    def _own(self, room: str, token: str) -> None:
        last = self._tails.pop(room)
        self._owners.pop(room, None)
        self._owned[room] = token
        self.listener.on_lease_acquired(
            room, Lease(self.edge_id, int(token.rpartition(":")[2]), True, token, *last))

    def _owner_changed(self, room: str, owner: str) -> None:
        if room in self._tails and self._owners.get(room) != owner:
            self._owners[room] = owner
            self.listener.on_owner_changed(room, owner)

    def _take_lapsed(self) -> None:
        """Take every room we read whose lease lapsed (the lease poll of the Redis store)."""
        for room in list(self._tails):
            r = self.backend.room(room)
            if r.owner is None:
                self._deliver(room)
                r.epoch += 1
                r.owner = f"{self.edge_id}:{r.epoch}"
                if self.stats is not None:
                    self.stats.lease_takeovers += 1
                self._own(room, r.owner)

    def suspect(self, edge_id: str) -> None:
        if edge_id != self.edge_id and edge_id not in self.backend.edges:
            self.backend.kill(edge_id)  # gone without a word: its leases lapse

    # -- records ----------------------------------------------------------------------

    def append(self, room: str, epoch: int, seq: int, data: bytes) -> None:
        self._appends.setdefault(room, []).append((epoch, seq, data))
        self._flush_soon()

    def forward(self, owner_edge: str, fwd: Forwarded) -> None:
        self._forwards.append((owner_edge, fwd))
        self._flush_soon()

    def forward_ack(self, origin_edge: str, sender: str, req_id: int, epoch: int,
                    seq: int) -> None:
        store = self.backend.edges.get(origin_edge)
        if store is not None:
            store._soon(store.listener.on_remote_ack, sender, req_id, epoch, seq)

    def _flush_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            self._soon(self._flush_now)

    async def flush(self) -> bool:
        self._flush_now()
        return False

    def _flush_now(self) -> None:
        self._flush_due = False
        appends, self._appends = self._appends, {}
        for room, items in appends.items():
            tok = self._owned.get(room)
            if tok is None:
                continue  # fenced meanwhile: these will never be durable here
            r = self.backend.room(room)
            if r.owner != tok:  # fencing: another edge holds the lease now
                del self._owned[room]
                self.listener.on_lease_lost(room)
                continue
            for epoch, seq, data in items:
                if (epoch, seq) > r.last_id:
                    r.log.append((epoch, seq, data))
                    r.last_id = (epoch, seq)
                    r.added += 1
                    if len(r.log) > self.backend.maxlen:
                        r.log.popleft()
            self.listener.on_durable(room, items[-1][0], items[-1][1])
            self._tell_readers(room, lambda s, room=room: s._deliver(room))
        forwards, self._forwards = self._forwards, []
        for owner, f in forwards:
            store = self.backend.edges.get(owner)
            if store is not None:  # a dead edge's inbox is never read
                store._soon(store.listener.on_forwarded_publish, f.room, f.sender, f.payload,
                            f.origin, f.req_id, f.idem)

    def _deliver(self, room: str) -> None:
        """Hand the records after our tail of a mirrored room to the listener."""
        tail = self._tails.get(room)
        if tail is None:
            return
        for epoch, seq, data in list(self.backend.room(room).log):
            if (epoch, seq) > tail:
                tail = self._tails[room] = (epoch, seq)
                self.listener.on_remote_message(room, unpack_record(epoch, seq, data))
                if room not in self._tails:
                    return

    # -- ephemeral traffic, presence ------------------------------------------------------

    def publish_live(self, room: str, kind: int, body: list[Any]) -> None:
        for store in list(self.backend.edges.values()):
            if store is not self and (room in store._tails or room in store._owned):
                store._soon(store.listener.on_live, room, kind, body)

    async def add_member(self, room: str, session_id: str, member: list[str]) -> None:
        self.backend.room(room).members[session_id] = [*member, self.edge_id]

    async def remove_member(self, room: str, session_id: str) -> None:
        members = self.backend.room(room).members
        if members.get(session_id, [""] * 4)[3] == self.edge_id:  # not if it moved on
            del members[session_id]

    async def members(self, room: str) -> list[list[str]]:
        live = self.backend.edges
        return [list(m) for m in self.backend.room(room).members.values() if m[3] in live]

    # -- history --------------------------------------------------------------------------

    def put_listing(self, room: str, entry: bytes | None) -> None:
        if entry is None:
            self.backend.listings.pop(room, None)
        else:
            self.backend.listings[room] = entry

    async def listings(self) -> dict[str, bytes]:
        return dict(self.backend.listings)

    async def history_after(self, room: str, epoch: int, seq: int,
                            limit: int) -> tuple[list[Record], bool, Pos | None]:
        r = self.backend.rooms.get(room)
        if r is None:
            return [], False, None
        pos = (epoch, seq)
        first = (r.log[0][0], r.log[0][1]) if r.log else None
        if r.added <= len(r.log):
            gap = False  # nothing was ever trimmed
        elif first is None:
            gap = r.last_id > pos
        else:
            gap = not (first <= pos or first == (epoch, seq + 1))
        if gap:
            return [], True, first
        out = [unpack_record(e, s, d) for e, s, d in r.log if (e, s) > pos]
        return out[:limit], False, first

    async def recent(self, room: str, count: int) -> list[Record]:
        r = self.backend.rooms.get(room)
        if r is None or count <= 0:
            return []
        return [unpack_record(e, s, d) for e, s, d in list(r.log)[-count:]]

    # -- game-room snapshots ----------------------------------------------------------------

    async def put_snapshot(self, room: str, pos: Pos, data: bytes, ttl_ms: int) -> bool:
        """As Redis: fenced by our lease token, refused until the history holds ``pos``,
        expires after ``ttl_ms`` (a monotonic deadline, checked on read), refused when
        older than the stored one, and trims the history behind the previous snapshot's
        position."""
        tok = self._owned.get(room)
        r = self.backend.rooms.get(room)
        if tok is None or r is None or r.owner != tok or r.last_id < pos:
            return False
        prev = r.snapshot
        if prev is not None and time.monotonic() >= prev[2]:
            prev = None  # expired
        if prev is not None and pos < prev[0]:
            return False
        r.snapshot = (pos, bytes(data), time.monotonic() + ttl_ms / 1000.0)
        if prev is not None:
            while r.log and (r.log[0][0], r.log[0][1]) < prev[0]:
                r.log.popleft()
        return True

    async def get_snapshot(self, room: str) -> tuple[Pos, bytes] | None:
        r = self.backend.rooms.get(room)
        if r is None or r.snapshot is None:
            return None
        pos, data, deadline = r.snapshot
        if time.monotonic() >= deadline:
            r.snapshot = None  # expired
            return None
        return pos, data

    async def drop_snapshot(self, room: str) -> None:
        tok = self._owned.get(room)
        r = self.backend.rooms.get(room)
        if tok is not None and r is not None and r.owner == tok:
            r.snapshot = None
