"""Graceful drain with live handover (SIGTERM): make before break.

1. The edge stops taking new clients (WebSocket upgrades get 503 with a retry
   hint; ``/healthz`` says draining; the registry heartbeat marks it draining
   so no other edge sends clients here).
2. Every client gets a HANDOFF frame naming a live neighbour (least loaded
   first, round robin), spread over ``drain_window`` seconds so the
   neighbours are not flooded.  The client connects there and resumes its
   session *before* closing this connection, which keeps delivering
   meanwhile.
3. When the last local member of a room has moved, the room's lease is
   handed to the edge that member went to, with the same epoch: positions
   continue and the neighbour adopts the room at once (inbox notice).
4. When every client has moved, or after ``drain_timeout`` seconds, the edge
   lingers one lease poll (passing on publishes that neighbours still forward
   here), then stops (remaining clients get close 4100 and resume elsewhere by
   themselves).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from client_sdk.protocol import Handoff, encode

from .liveness import probe_edge

if TYPE_CHECKING:
    from .server import EdgeServer
    from .session import ClientSession

__all__ = ["drain"]

log = logging.getLogger("edge_node.drain")


async def _note_handoffs(server: EdgeServer, batch: list[ClientSession]) -> None:
    """Checkpoint the batch with its HANDOFF time (``ho``) before the frames go out, so
    the neighbour each client resumes on can observe ``edge_handoff_seconds``."""
    now = time.time()
    for sess in batch:
        server.handoff_at[sess.session_id] = now
    if server.store is not None and batch:
        await server.store.save_many([(sess.session_id, sess.holder, sess.attempt,
                                       server._checkpoint_data(sess)) for sess in batch])


async def drain(server: EdgeServer) -> dict[str, float]:
    """Move every client to a neighbour, then return; the caller stops the edge.

    Returns figures for the log: clients told to move, clients that moved,
    seconds taken.
    """
    s = server.settings
    t0 = time.monotonic()
    server.draining = True
    server.hub.draining = True
    if server.registry is not None:
        await server.registry.beat()  # publish "draining" now, not at the next beat
    candidates = await server.live_neighbours()
    # The registry can still list an edge that died a moment ago: only hand
    # clients to neighbours that answer now.
    alive = await asyncio.gather(*(probe_edge(url) for _, url in candidates))
    neighbours = [nb for nb, ok in zip(candidates, alive, strict=True) if ok]
    sessions = list(server.sessions.values())
    if not neighbours or not sessions:
        log.info("drain: nothing to hand over", extra={"neighbours": len(neighbours),
                                                        "clients": len(sessions)})
        return {"told": 0, "moved": 0, "seconds": time.monotonic() - t0}
    assignment: dict[str, str] = {}
    server.hub.handoff_target = assignment.get
    deadline_ms = int(s.drain_timeout * 1000)
    # Spread the HANDOFF frames over the window in small batches.
    batches = max(1, min(len(sessions), int(s.drain_window / 0.02) or 1))
    per_batch = -(-len(sessions) // batches)
    pause = s.drain_window / batches if batches > 1 else 0.0
    told = 0
    for i in range(0, len(sessions), per_batch):
        batch = [sess for sess, _ws in sessions[i : i + per_batch] if not sess.closed]
        await _note_handoffs(server, batch)
        for session in batch:
            edge_id, url = neighbours[told % len(neighbours)]
            assignment[session.session_id] = edge_id
            session.moving = True
            session.send(encode(Handoff(url, "drain", deadline_ms)))
            told += 1
        if pause:
            await asyncio.sleep(pause)
    server.stats.handoffs_sent += told
    await server.wait_no_sessions(t0 + s.drain_window + s.drain_timeout - time.monotonic())
    # Linger one lease poll: a neighbour that has not heard of a handover yet still
    # forwards publishes here, and this edge passes them on to the new owner; once it
    # has exited they would wait for a timeout (measured: 0.5 s silences without it).
    await asyncio.sleep(s.lease_ms / 4000.0 + 0.1)
    moved = told - sum(1 for sess, _ in server.sessions.values() if sess.moving)
    server.stats.handoffs_completed += moved
    took = time.monotonic() - t0
    log.info("drain finished", extra={"told": told, "moved": moved, "seconds": round(took, 3),
                                      "left": len(server.sessions)})
    return {"told": told, "moved": moved, "seconds": took}
