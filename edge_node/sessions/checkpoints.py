"""Checkpoints of this edge's sessions: what an edge reads when a client resumes there.

A checkpoint holds the client's subject and kind, this edge's id, each of its rooms as
``[flags, epoch, seq]`` (the room's position here) and, while draining, ``ho``: the
wall-clock time of its HANDOFF frame.  A connection first writes its checkpoint with
force (taking the session over from an older connection); after that only while it
still holds the checkpoint (``SessionStore.save_many``, holder and attempt).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import ErrorCode
from edge_node.runtime.tasks import spawn

if TYPE_CHECKING:
    from edge_node.fanout.hub import Hub
    from edge_node.runtime.metrics import EdgeStats
    from edge_node.sessions.session import ClientSession
    from edge_node.sessions.session_store import SessionStore
    from edge_node.transports.connection import SessionConn

__all__ = ["Checkpointer"]


class Checkpointer:
    """Writes the checkpoints of the sessions in ``sessions`` (the server's live table,
    session id -> (session, connection), read at each call).

    ``store`` is ``None`` until the edge connects to Redis; without it nothing is
    written and every call returns at once.  Writes count in ``stats.checkpoints``.
    """

    def __init__(self, edge_id: str, hub: Hub, stats: EdgeStats,
                 sessions: dict[str, tuple[ClientSession, SessionConn]]) -> None:
        self.edge_id = edge_id
        self.hub = hub
        self.stats = stats
        self.sessions = sessions
        self.store: SessionStore | None = None
        #: Draining: session id -> wall-clock time of its HANDOFF (in its checkpoint as
        #: "ho", so the neighbour it resumes on measures the handover time).
        self.handoff_at: dict[str, float] = {}

    def data(self, s: ClientSession) -> dict[str, Any]:
        """The checkpoint of session ``s`` as it is now."""
        return {
            "sub": s.claims.subject, "kind": s.claims.kind, "edge": self.edge_id,
            "rooms": {r: [s.room_flags.get(r, 0), *self.hub.position(r)] for r in s.rooms},
            **({"ho": self.handoff_at[s.session_id]} if s.session_id in self.handoff_at
               else {}),
        }

    async def claim(self, session: ClientSession) -> bool:
        """A new connection's first, forced write.  False when a newer connection of the
        session holds the checkpoint (this one must give up the session); else True, and
        ``session.holding`` says whether the write went through (on a Redis error the
        periodic :meth:`save_all` retries the take-over)."""
        if self.store is None:
            return True
        result = await self.store.save_many(
            [(session.session_id, session.holder, session.attempt, self.data(session))],
            force=True)
        if result is not None and result[1]:  # a newer connection holds it
            return False
        session.holding = result is not None
        return True

    async def save_all(self) -> None:
        """One periodic round over every open session.  A connection that finds its
        checkpoint taken by another connection of its session (the client resumed
        elsewhere over a half-open link here) is marked moving and closed with
        ``SESSION_TAKEN_OVER``."""
        if self.store is None:
            return
        # Only sessions whose first (taking-over) write is done: before it, the
        # checkpoint may still name the previous connection.
        live = [(s, conn) for s, conn in self.sessions.values() if not s.closed]
        # Connections whose first (taking-over) write has not succeeded yet write
        # with force; the others only while they still hold the checkpoint.
        for force in (True, False):
            entries = [(s, ws) for s, ws in live if s.holding != force]
            if not entries:
                continue
            result = await self.store.save_many(
                [(s.session_id, s.holder, s.attempt, self.data(s))
                 for s, _ws in entries], force=force)
            if result is None:
                return  # Redis unreachable: try again next round
            written, stale = result
            self.stats.checkpoints += written
            stale_ids = set(stale)
            for s, ws in entries:
                if s.session_id not in stale_ids:
                    s.holding = True
                elif not s.closed:
                    # The client resumed on another connection (a half-open link
                    # here): this one must not speak for the session any more.
                    # (Match the very connection written for: the sid may belong
                    # to a newer one by now.)
                    s.moving = True
                    spawn(ws.close(ErrorCode.SESSION_TAKEN_OVER,
                                   "session resumed on another connection"))

    async def note_handoffs(self, batch: list[ClientSession]) -> None:
        """Record now as the HANDOFF time of ``batch`` and checkpoint it, before the
        frames go out, so the neighbour each client resumes on can observe
        ``edge_handoff_seconds``."""
        now = time.time()
        for sess in batch:
            self.handoff_at[sess.session_id] = now
        if self.store is not None and batch:
            await self.store.save_many([(sess.session_id, sess.holder, sess.attempt,
                                         self.data(sess)) for sess in batch])
