"""Handing a room's lease to a neighbour while draining (a mixin of
:class:`~edge_node.store.redis_sync.RoomSync`).

Two ways, both with the same epoch (positions continue, so every resume recovers):

- :meth:`RoomHandover.hand_over`: at the start of a drain, for a room that a live
  neighbour already mirrors.  This edge keeps the room as a *mirror* (its members are
  still here, served from the stream like any mirror's) until they have moved.
- ``deactivate(room, hand_to)`` (in RoomSync): the last local member moved away; the
  lease goes to the edge it moved to and this edge forgets the room.

Either way: queued appends are flushed first (the new owner continues after the last
durable position), the ``HANDOVER`` script moves the lease only if this edge still
holds it, the new owner is told through its inbox (it adopts at once, no lease poll)
and every other mirror through the room's live channel (``LIVE_OWNER``).  Publishes
this edge forwards for the room while that happens are held back and queued only
after the inbox notice, so the new owner never reads a forwarded publish for a room
it has not adopted yet (it would drop it, and the sender would wait for a timeout).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from edge_node.redis_io import keys as K
from edge_node.store.records import LIVE_OWNER, Handover, LiveEvent
from edge_node.store.redis_append import AppendPipeline
from edge_node.store.redis_inbox import InboxReader
from edge_node.store.types import SyncUnavailable

__all__ = ["RoomHandover"]


#: Flush rounds to empty a room's append queue before its lease moves.
_FLUSH_ROUNDS = 50


class RoomHandover:
    """Mixin: lease handover while draining.  The attributes below are RoomSync's."""

    r: Any
    edge_id: str
    lease_ms: int
    stats: Any
    _owned: dict[str, str]
    _durable: dict[str, tuple[int, int]]
    appends: AppendPipeline
    inbox: InboxReader
    _tails: dict[str, bytes]
    _owners: dict[str, str]
    #: room -> forwards held back while its lease moves: (owner edge, packed body).
    _handing: dict[str, list[tuple[str, bytes]]]

    flush: Callable[[], Awaitable[bool]]
    _script: Callable[..., Awaitable[Any]]
    _publish_live: Callable[[str, bytes], Awaitable[None]]
    cluster: bool

    def _hold_forward(self, owner_edge: str, room: str, data: bytes) -> bool:
        """Hold a forward of ``room`` while its lease is being handed over."""
        held = self._handing.get(room)
        if held is None:
            return False
        held.append((owner_edge, data))
        return True

    def _release_forwards(self, room: str) -> None:
        held = self._handing.pop(room, None)
        if held:
            self.appends.queue_forwards(held)

    async def hand_over(self, room: str, to: str, last: tuple[int, int]) -> bool:
        """Hand our lease on ``room`` to edge ``to`` now and keep mirroring the room
        from position ``last`` (the last one this edge assigned; the caller stops
        assigning before calling).  False if the lease could not be handed (not ours
        any more, appends not durable, Redis refused): the caller keeps owning it.

        Raises :class:`~edge_node.store.types.SyncUnavailable` when Redis cannot be
        reached (the lease may or may not have moved: ``owns(room)`` tells).
        """
        tok = self._owned.get(room)
        if tok is None:
            return False
        self._handing.setdefault(room, [])
        try:
            token = await self._pass_lease(room, tok, to)
            if token is None:
                return False
            # Mirror from here: the read loop picks the new tail up.
            self._tails[room] = f"{last[0]}-{last[1]}".encode()
            self._owners[room] = to
            self.inbox.wake()
            await self._announce(room, to, token)
            return True
        except (RedisError, RedisClusterException) as exc:
            raise SyncUnavailable(str(exc)) from exc
        finally:
            self._release_forwards(room)

    async def _pass_lease(self, room: str, tok: str, to: str) -> str | None:
        """Make the room's queued appends durable, then move the lease (``HANDOVER``
        script: only if ``tok`` still holds it).  Returns the new owner's token."""
        for _ in range(_FLUSH_ROUNDS):
            if not self.appends.pending(room):
                break
            await self.flush()
        if self.appends.pending(room) or self._owned.get(room) != tok:
            return None
        new: Any = await self._script("handover", 1, K.room_owner(room), tok, to,
                                      self.lease_ms)
        if not new:
            return None
        del self._owned[room]
        self._durable.pop(room, None)
        self.stats.handovers += 1
        return new.decode() if isinstance(new, bytes) else str(new)

    async def _announce(self, room: str, to: str, token: str) -> None:
        """Tell the new owner (inbox: it adopts at once) and the room's mirrors (live
        channel: their publishes go to the new owner, not to an edge about to exit), in
        one round trip.  If the notice is lost, the new owner adopts the room at its
        next lease poll."""
        notice = {"h": Handover(room, token).pack()}
        live = LiveEvent(LIVE_OWNER, self.edge_id, room, (to,)).pack()
        if self.cluster:  # redis-py refuses PUBLISH in a cluster pipeline
            await self.r.xadd(K.edge_inbox(to), notice, maxlen=10_000, approximate=True)
            await self._publish_live(room, live)
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(K.edge_inbox(to), notice, maxlen=10_000, approximate=True)
        pipe.publish(K.room_live(room), live)
        res = await pipe.execute(raise_on_error=False)
        if isinstance(res[0], Exception):
            raise SyncUnavailable(str(res[0]))
