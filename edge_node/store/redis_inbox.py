"""The stream reader of :class:`~edge_node.store.redis_sync.RoomSync`: this edge's inbox
and, on one server, the streams of the rooms it mirrors, in one blocking ``XREAD``.

Contract:

- The inbox (``keys.edge_inbox(edge_id)``) carries what other edges send this one: publishes
  forwarded to a room it owns (``p``: ``listener.on_forwarded_publish``), acks of
  forwarded publishes that were duplicates (``a``: ``listener.on_remote_ack``) and
  handover notices (``h``: the room is adopted through ``adopt`` before anything read
  after the notice is handled, since forwards that follow it are the room's).  A bad
  entry is logged and dropped.
- Entries of mirrored rooms go to ``deliver(room, entries)``.  ``tails`` (room ->
  last stream id read) is the room store's table, only read here; on a Redis Cluster
  (``read_tails`` false) the rooms are polled elsewhere (:mod:`edge_node.store.redis_tail`)
  and only the inbox is read.
- :meth:`InboxReader.wake` makes a blocked read return, so it picks up a changed
  ``tails`` at once.
- Read errors are logged and retried with a backoff; :meth:`InboxReader.run` never
  returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edge_node.redis_io import keys as K
from edge_node.runtime.tasks import spawn
from edge_node.store.records import ForwardAck, Forwarded, Handover, RecordError
from edge_node.store.types import SyncListener

__all__ = ["InboxReader", "xadd_quiet"]

log = logging.getLogger("edge_node.sync")


async def xadd_quiet(r: aioredis.Redis, key: str, fields: dict[str, bytes]) -> None:
    """Best-effort ``XADD`` to a (capped) inbox stream; Redis errors are ignored."""
    with contextlib.suppress(RedisError):
        await r.xadd(key, fields, maxlen=10_000, approximate=True)  # type: ignore[arg-type]


class InboxReader:
    """Reads this edge's inbox (and mirrored rooms, on one server); see the module
    docstring.  Call :meth:`open` before :meth:`run`."""

    def __init__(
        self, r: aioredis.Redis, blocking: aioredis.Redis, edge_id: str,
        listener: SyncListener, *, tails: dict[str, bytes], read_tails: bool,
        deliver: Callable[[str, list[Any]], int],
        adopt: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.r = r
        self.blocking = blocking  # no short socket timeout: it blocks in XREAD
        self.listener = listener
        self.key = K.edge_inbox(edge_id)
        self._last: bytes = b"0-0"
        self._tails = tails
        self._read_tails = read_tails
        self._deliver = deliver
        self._adopt = adopt

    async def open(self) -> None:
        """Create the inbox stream; reading starts after this marker entry."""
        first: Any = await self.r.xadd(self.key, {"w": b"1"}, maxlen=10_000,
                                       approximate=True)
        self._last = first

    def wake(self) -> None:
        """Make the blocked read return (best effort, in the background)."""
        spawn(xadd_quiet(self.r, self.key, {"w": b"1"}))

    async def run(self) -> None:
        """The reader task: one blocking ``XREAD`` over the inbox and mirrored rooms."""
        backoff = 0.1
        while True:
            streams: dict[Any, Any] = {self.key: self._last}
            if self._read_tails:  # one slot per room: a cluster polls them (_tail_loop)
                for room, last in self._tails.items():
                    streams[K.room_log(room)] = last
            try:
                res: Any = await self.blocking.xread(streams, count=1000, block=1000)
                backoff = 0.1
            except RedisError as exc:
                log.warning("stream read failed", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            for key, entries in res or ():
                skey = key.decode()
                if skey == self.key:
                    for eid, fields in entries:
                        self._last = eid
                        handed = self._on_inbox(fields)
                        if handed is not None:
                            # A handover: own the room before handling the publishes
                            # forwarded to us after it (their order is the room's).
                            await self._adopt_quiet(handed, fields)
                    continue
                self._deliver(K.room_of_log(skey), entries)

    def _on_inbox(self, fields: dict[bytes, bytes]) -> str | None:
        """Handle one inbox entry; returns the room of a handover notice (to adopt)."""
        try:
            if b"p" in fields:
                f = Forwarded.unpack(fields[b"p"])
                self.listener.on_forwarded_publish(f.room, f.sender, f.payload, f.origin,
                                                   f.req_id, f.idem)
            elif b"a" in fields:
                a = ForwardAck.unpack(fields[b"a"])
                self.listener.on_remote_ack(a.sender, a.req_id, a.pos[0], a.pos[1])
            elif b"h" in fields:
                h = Handover.unpack(fields[b"h"])
                if h.room in self._tails:
                    return h.room
        except (RecordError, ValueError, TypeError):
            log.warning("bad inbox entry dropped")
        return None

    async def _adopt_quiet(self, room: str, fields: dict[bytes, bytes]) -> None:
        token = Handover.unpack(fields[b"h"]).token
        try:
            await self._adopt(room, token)
        except RedisError as exc:  # the lease poll adopts it later
            log.warning("adopting a handed-over room failed",
                        extra={"room": room, "error": str(exc)})
