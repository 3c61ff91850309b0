"""Detecting acknowledged messages that a Redis failover lost (a mixin of
:class:`~edge_node.store.redis_sync.RoomSync`).

With asynchronous replication a promoted replica may miss the last writes its primary
acknowledged.  Appends wait for a replica (``WAIT``, the default on a cluster) so that
cannot happen to an acknowledged message; without ``WAIT`` the owner edge still finds
out: after connection trouble or a lost lease it compares each room's stream end with
the last position Redis confirmed to it (and an append refused with ``GAP`` tells the
same).  A lost range is recorded in ``er:{room:NAME}:lost`` (``after`` -> ``upto``), where
:meth:`LossGuard.lost_gap` finds it, so a resume across it is answered
``recovered: false`` instead of silently skipping the lost messages.

Not covered: the owner edge dying in the same instant as the primary (nobody is left
who knows what was acknowledged).  Keep ``WAIT`` on where that matters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from edge_node.redis_io import keys as K
from edge_node.runtime.tasks import spawn
from edge_node.store.history import split_id
from edge_node.store.redis_append import AppendPipeline
from edge_node.store.types import SyncListener, SyncUnavailable

__all__ = ["LossGuard"]

log = logging.getLogger("edge_node.sync")


class LossGuard:
    """Mixin: loss detection.  The attributes below are RoomSync's."""

    r: aioredis.Redis
    listener: SyncListener
    stats: Any
    _owned: dict[str, str]
    appends: AppendPipeline
    _script: Callable[..., Any]
    # room -> last position Redis confirmed (acked to publishers) while we own it.
    _durable: dict[str, tuple[int, int]]

    async def lost_gap(self, room: str, epoch: int, seq: int) -> bool:
        """True when a recorded lost range ends after ``(epoch, seq)``: history cannot
        give a client at that position everything it missed."""
        lost: Any = await self.r.hgetall(K.room_lost(room))
        return any(split_id(upto) > (epoch, seq) for upto in lost.values())

    async def _check_tails(self) -> None:
        """After connection trouble (a failover?) or a lost lease: compare each room's
        stream end with the last position Redis confirmed to us.  A stream that ends
        before it lost acknowledged entries (see :meth:`_mark_lost`).  The append
        pipeline calls this before its next flush (and calls again if it raises)."""
        rooms = list(self._durable)
        try:
            replies = await self.appends.execute(
                [("XREVRANGE", K.room_log(room), "+", "-", "COUNT", 1) for room in rooms])
        except (RedisError, OSError) as exc:
            raise SyncUnavailable(str(exc)) from exc
        for room, rep in zip(rooms, replies, strict=True):
            if isinstance(rep, ResponseError):
                raise SyncUnavailable(str(rep))
            last = split_id(rep[0][0]) if rep else (0, 0)
            durable = self._durable.get(room)
            if durable is not None and last < durable:
                self._report_lost(room, last, durable)
                await self._mark_lost(room, last, durable, self._owned.get(room))
            if room not in self._owned:
                self._durable.pop(room, None)

    def _report_lost(self, room: str, last: tuple[int, int], durable: tuple[int, int]) -> None:
        self.stats.stream_lost += 1
        log.error("acknowledged entries lost in Redis (failover without WAIT?)",
                  extra={"room": room, "stream_last": list(last), "acked": list(durable)})

    def _lost(self, room: str, err: str) -> bool:
        """A ``GAP e-s`` refusal where the stream ends *before* what Redis already
        confirmed to us: a failover lost acknowledged entries (asynchronous replication
        without ``WAIT``).  Record the lost range in the room's ``lost`` hash, which
        :meth:`history_after` reports as a gap (so resuming clients get
        ``recovered: false``), and give the lease up so the room continues in a new
        epoch.  Returns False for an ordinary gap (a batch not yet retried)."""
        durable = self._durable.get(room)
        try:
            le, _, ls = err.split()[1].partition("-")
            last = (int(le), int(ls))
        except (IndexError, ValueError):
            return False
        if durable is None or last >= durable:
            return False
        self._report_lost(room, last, durable)
        tok = self._owned.get(room)
        spawn(self._mark_lost(room, last, durable, tok))
        return True

    async def _mark_lost(self, room: str, last: tuple[int, int], durable: tuple[int, int],
                         tok: str | None) -> None:
        """Record the lost range ``(last, durable]`` in the room's ``lost`` hash (a resume
        across it is answered ``recovered: false``), keep the epoch counter past the lost
        epoch (its INCR may have been lost too: positions must never be reissued), and
        give up our lease so the room continues in a new epoch."""
        try:
            await self.r.hset(K.room_lost(room), f"{last[0]}-{last[1]}",
                              f"{durable[0]}-{durable[1]}")
            await self._script("epoch_floor", 1, K.room_epoch(room), durable[0])
            if tok is not None:
                await self._script("release", 1, K.room_owner(room), tok)
        except RedisError as exc:
            log.warning("cannot record lost range", extra={"room": room, "error": str(exc)})
            return
        if self._owned.get(room) == tok and tok is not None:
            del self._owned[room]
            self._durable.pop(room, None)
            self.appends.drop(room)
            self.listener.on_lease_lost(room)
