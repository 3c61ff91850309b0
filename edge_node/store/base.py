"""The room store interface: what the rooms' driver needs from the shared state behind
the edges (room leases with fencing, each room's ordered history, forwarding to the
owner, reading rooms owned elsewhere, ephemeral cross-edge traffic, presence).

Two implementations: :class:`edge_node.store.redis_sync.RoomSync` (Redis or a Redis Cluster:
production) and :class:`edge_node.store.memory.MemoryRoomStore` (one process: an edge
without Redis, and tests).  ``tests/integration/test_room_store_contract.py`` runs one
suite against both.

A store reports back through a :class:`StoreListener` (the hub); no upcall is made
from inside a call into the store, except where a method says so.
"""

from __future__ import annotations

from typing import Any, Protocol

from edge_node.rooms.events import Pos, Record
from edge_node.store.records import Forwarded
from edge_node.store.types import Lease, SyncListener, SyncUnavailable

__all__ = ["RoomStore", "StoreListener", "Lease", "StoreUnavailable"]

#: The upcalls a store makes (``on_durable``, ``on_remote_message``, ``on_lease_lost``, ...).
StoreListener = SyncListener
#: Raised when the store cannot be reached for an operation that needs it.
StoreUnavailable = SyncUnavailable


class RoomStore(Protocol):
    """Room state shared between edges.  Call :meth:`start` first, :meth:`stop` last."""

    edge_id: str

    async def start(self) -> None:
        """Connect and start background work.  Raises if the store cannot be reached."""

    async def stop(self) -> None:
        """Flush what is queued (bounded), give leases up, stop."""

    async def activate(self, room: str, since: Pos | None = None) -> Lease:
        """Take the room's lease if it is free (a new epoch), else start reading the
        room's new records for this edge (``on_remote_message``): from the history's
        end, or from just after ``since``.  Raises :data:`StoreUnavailable`."""

    async def deactivate(self, room: str, hand_to: str | None = None) -> None:
        """No member is left here: stop reading the room, release its lease (once its
        queued records are stored), or hand the lease to edge ``hand_to`` (drain)."""

    def owns(self, room: str) -> bool:
        """True while this edge holds the room's lease."""

    def last_queued(self, room: str) -> Pos | None:
        """Position of the newest record still queued for the history, if any."""

    def append(self, room: str, epoch: int, seq: int, data: bytes) -> None:
        """Queue one packed record at ``(epoch, seq)`` (owner only; never blocks).
        Later: ``on_durable`` up to it, or ``on_lease_lost`` if the lease is gone."""

    def forward(self, owner_edge: str, fwd: Forwarded) -> None:
        """Queue a publish for the owner edge; the owner gets ``on_forwarded_publish``."""

    def forward_ack(self, origin_edge: str, sender: str, req_id: int, epoch: int,
                    seq: int) -> None:
        """Tell ``origin_edge`` its forwarded publish duplicated ``(epoch, seq)``
        (it gets ``on_remote_ack``)."""

    def publish_live(self, room: str, kind: int, body: list[Any]) -> None:
        """Best-effort ephemeral event to the other edges that have the room
        (``on_live``)."""

    async def add_member(self, room: str, session_id: str, member: list[str]) -> None:
        """Record a presence member of this edge (best effort)."""

    async def remove_member(self, room: str, session_id: str) -> None:
        """Forget a presence member this edge recorded (best effort; one recorded by
        another edge since, where its session resumed, stays)."""

    async def members(self, room: str) -> list[list[str]]:
        """Members on every live edge: ``[session_id, subject, kind, edge_id]``."""

    def put_listing(self, room: str, entry: bytes | None) -> None:
        """Publish (None: withdraw) the listing of a game room this edge runs, for
        every edge and the origin to read (best effort)."""

    async def listings(self) -> dict[str, bytes]:
        """Every published game-room listing: room -> entry (stale ones included)."""

    async def history_after(self, room: str, epoch: int, seq: int,
                            limit: int) -> tuple[list[Record], bool, Pos | None]:
        """Records after a position (at most ``limit``), whether trimming or a loss
        left a gap history cannot fill, and the first position still held."""

    async def recent(self, room: str, count: int) -> list[Record]:
        """The newest ``count`` records, oldest first."""

    async def put_snapshot(self, room: str, pos: Pos, data: bytes, ttl_ms: int) -> bool:
        """Store ``data`` as the game-room snapshot of ``room`` covering its stream up to
        ``pos``.  Fenced: only while this edge holds the room's lease (the current token),
        and only once the stream holds ``pos`` (its last entry id >= pos), so a snapshot
        never covers inputs that are not durable.  On success: the key expires after
        ``ttl_ms`` (refreshed by every put), and the stream is trimmed behind the
        *previous* snapshot's position (entries with id < previous pos removed: one
        snapshot interval of inputs stays behind the newest snapshot, for duplicate
        detection).  Returns True when stored, False when refused: the lease is not
        ours, ``pos`` is not in the stream yet, or the stored snapshot covers more
        (``pos`` older than its position: a late write never replaces a newer one; an
        equal position replaces it).  Raises :data:`StoreUnavailable` when the store
        cannot be reached."""

    async def get_snapshot(self, room: str) -> tuple[Pos, bytes] | None:
        """The newest snapshot of ``room`` (its position and data), or None.
        Raises :data:`StoreUnavailable`."""

    async def drop_snapshot(self, room: str) -> None:
        """Forget ``room``'s snapshot (the game ended), only while this edge holds the
        lease.  Best effort: never raises."""

    async def hand_over(self, room: str, to: str, last: Pos) -> bool:
        """Drain: store what is queued, then move our lease to edge ``to`` with the
        same epoch and read the room from ``last`` on.  False if it could not move."""

    def suspect(self, edge_id: str) -> None:
        """Something suggests ``edge_id`` is dead: check, and if so take over the rooms
        it owns that this edge reads (``on_lease_acquired``)."""

    async def flush(self) -> bool:
        """Send what is queued now; True if the store refused a batch."""
