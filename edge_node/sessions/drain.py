"""Graceful drain with live handover (SIGTERM): make before break.

1. The edge stops taking new clients (WebSocket upgrades get 503 with a retry
   hint; ``/healthz`` says draining; the registry heartbeat marks it draining
   so no other edge sends clients here).
2. Each room this edge owns goes to a live neighbour at once, with the same epoch
   (positions continue): to the least loaded neighbour that already has members
   in it (it mirrors the room, so it adopts it from its inbox without a lease
   poll).  This edge keeps such a room as a mirror while its own members move.
3. Every client gets a HANDOFF frame naming its new edge: the new owner of its
   room (or the owner of a room this edge only mirrors), so it is served by the
   owner's own fan-out; otherwise a live neighbour (least loaded first, round
   robin).  The frames are spread over ``drain_window`` seconds so the neighbours
   are not flooded.  The client connects there and resumes its session *before*
   closing this connection, which keeps delivering meanwhile.
4. A room that no neighbour had members in keeps its owner here until its last
   local member has moved; its lease then goes to the edge that member went to.
5. When every client has moved, or after ``drain_timeout`` seconds, the edge
   lingers one lease poll (passing on publishes that neighbours still forward
   here), then stops (remaining clients get close 4100 and resume elsewhere by
   themselves).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import TYPE_CHECKING

from client_sdk.protocol import Handoff, encode
from edge_node.neighbours.liveness import probe_edge

if TYPE_CHECKING:
    from edge_node.server import EdgeServer

__all__ = ["drain"]

log = logging.getLogger("edge_node.sessions.drain")

#: Rooms whose members are looked up in Redis at once when choosing their new owners.
_MEMBER_QUERIES = 100
#: Room leases handed over at once when the drain starts.
_HANDOVERS_AT_ONCE = 2


async def _room_targets(server: EdgeServer, neighbours: list[tuple[str, str]]
                        ) -> dict[str, tuple[str, str]]:
    """Room -> the neighbour ``(edge id, url)`` its members should move to: its owner
    when that is a live neighbour (a room this edge mirrors), else the first neighbour
    (least loaded first) with members in it.  Rooms with neither are left out."""
    hub, sync = server.hub, server.sync
    by_id = dict(neighbours)
    out: dict[str, tuple[str, str]] = {}
    asked: list[str] = []
    for name, room in list(hub.rooms.items()):
        if not room.members:
            continue
        if not room.mine:
            if room.owner in by_id:
                out[name] = (room.owner, by_id[room.owner])
        else:
            asked.append(name)
    if sync is None:
        return out
    order = [eid for eid, _ in neighbours]
    for i in range(0, len(asked), _MEMBER_QUERIES):
        chunk = asked[i : i + _MEMBER_QUERIES]
        found = await asyncio.gather(*(sync.members(r) for r in chunk), return_exceptions=True)
        for name, members in zip(chunk, found, strict=True):
            if isinstance(members, BaseException):
                continue  # Redis trouble: this room moves the old way
            edges = {m[3] for m in members if isinstance(m, list) and len(m) > 3}
            best = next((eid for eid in order if eid in edges), None)
            if best is not None:
                out[name] = (best, by_id[best])
    return out


async def drain(server: EdgeServer) -> dict[str, float]:
    """Move every client to a neighbour, then return; the caller stops the edge.

    Returns figures for the log: clients told to move, clients that moved, room
    leases handed over at the start, seconds taken.
    """
    s = server.settings
    t0 = time.monotonic()
    # No full collection while clients move: measured 38-41 ms pauses on an edge during a
    # drain, every client of it silent meanwhile.  The process exits after the drain, so
    # its garbage is bounded by drain_window + drain_timeout.
    gc.disable()
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
        return {"told": 0, "moved": 0, "rooms": 0, "seconds": time.monotonic() - t0}
    # Rooms first: while the clients are still here, and before the neighbours are
    # busy resuming them.  (A room handed over now is served here as a mirror.)
    targets = await _room_targets(server, neighbours)
    mine = [r for r, _ in targets.items() if server.hub.rooms.get(r) is not None
            and server.hub.rooms[r].mine]
    # A few at a time: all at once, every room's messages waited behind the same
    # burst of round trips on the draining edge and the new owners (measured: p99
    # latency 12-38 ms around the drain's start instead of 3-10 ms).
    sem = asyncio.Semaphore(_HANDOVERS_AT_ONCE)

    async def hand_over(room: str) -> bool:
        async with sem:
            return await server.hub.hand_over(room, targets[room][0])

    results = await asyncio.gather(*(hand_over(r) for r in mine), return_exceptions=True)
    handed = [ok is True for ok in results]
    for r, ok, res in zip(mine, handed, results, strict=True):
        if isinstance(res, BaseException):  # never let one room stop the drain
            log.warning("room handover failed", extra={"room": r, "error": repr(res)})
        if not ok and server.hub.rooms.get(r) is not None and server.hub.rooms[r].mine:
            del targets[r]  # still ours: its lease moves with its last member
    assignment: dict[str, str] = {}
    server.hub.handoff_target = assignment.get
    deadline_ms = int(s.drain_timeout * 1000)
    # Spread the HANDOFF frames over the window in small batches.
    batches = max(1, min(len(sessions), int(s.drain_window / 0.02) or 1))
    per_batch = -(-len(sessions) // batches)
    pause = s.drain_window / batches if batches > 1 else 0.0
    told = 0
    spread = 0
    for i in range(0, len(sessions), per_batch):
        batch = [sess for sess, _ws in sessions[i : i + per_batch] if not sess.closed]
        await server.checkpoints.note_handoffs(batch)  # before the HANDOFF frames go out
        for session in batch:
            target = next((targets[r] for r in sorted(session.rooms) if r in targets), None)
            if target is None:
                target = neighbours[spread % len(neighbours)]
                spread += 1
            edge_id, url = target
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
                                      "rooms_handed_at_start": len(mine) - handed.count(False),
                                      "left": len(server.sessions)})
    return {"told": told, "moved": moved, "rooms": float(len(mine) - handed.count(False)),
            "seconds": took}
