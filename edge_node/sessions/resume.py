"""A reconnecting client's resume (protocol.md §1): which session its connection
gets, and its rooms back.

:func:`check_resume` reads HELLO's ``resume`` and the session's checkpoint;
:func:`rejoin` joins the rooms again once the session is open.  Outcomes count in
``stats.resumes`` (``resumed``, ``session_expired``, ``resume_rejected``,
``retry_later``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import ErrorCode, Resumed, encode
from edge_node.sessions.handshake import parse_resume
from edge_node.sessions.session import SessionClose, new_session_id
from edge_node.sessions.session_store import CheckpointUnavailable, verify_resume_token

if TYPE_CHECKING:
    from edge_node.config import EdgeSettings
    from edge_node.fanout.hub import Hub
    from edge_node.runtime.metrics import EdgeMetrics, EdgeStats
    from edge_node.sessions.session import ClientSession
    from edge_node.sessions.session_store import SessionStore
    from edge_node.store.redis_sync import RoomSync

__all__ = ["ResumeOutcome", "check_resume", "rejoin"]


@dataclass(frozen=True, slots=True)
class ResumeOutcome:
    """What a connection's HELLO comes to.

    ``sid``: its session (the client's own when the resume token verifies, else a new
    one); ``resumed``: the token verified; ``invalid``: why its rooms are not resumed
    as asked (``"session_expired"``, ``"resume_rejected"``) or ``""``; ``attempt``: the
    client's connection attempt; ``rooms``: room -> ``[flags, epoch, seq]`` it asked for.
    """

    sid: str
    resumed: bool = False
    invalid: str = ""
    attempt: int = 0
    rooms: dict[str, Any] = field(default_factory=dict)


async def check_resume(resume: Any, claims: Any, settings: EdgeSettings,
                       store: SessionStore | None, sync: RoomSync | None,
                       metrics: EdgeMetrics) -> ResumeOutcome:
    """The session for a HELLO whose ``resume`` is ``resume`` (``None``: a new session).

    A verified resume observes ``edge_resume_gap_seconds`` (and ``edge_handoff_seconds``
    after a drain's HANDOFF) from its checkpoint, and has ``sync`` suspect the edge the
    checkpoint names (if it is dead, its rooms move now).  Raises
    :class:`~edge_node.sessions.session.SessionClose`: a malformed resume (see
    :func:`~edge_node.sessions.handshake.parse_resume`), or ``OVERLOADED`` when the
    checkpoint cannot be read now (never guessed expired: the client retries).
    """
    if resume is None:
        return ResumeOutcome(new_session_id())
    stats = metrics.stats
    sid, resumed, invalid = new_session_id(), False, ""
    attempt = 0
    req = parse_resume(resume, settings.limits.max_rooms_per_connection)
    if verify_resume_token(settings.secrets, req.sid, claims.subject, req.rt):
        sid, resumed = req.sid, True
        attempt = req.attempt
        try:
            cp = await store.load(sid) if store is not None else None
        except CheckpointUnavailable:
            # Cannot tell whether the session may resume: never guess
            # "expired" (that would skip the replay); have it retry.
            stats.resumes["retry_later"] += 1
            raise SessionClose(ErrorCode.OVERLOADED, "session store busy: retry") from None
        if cp is None or cp.get("sub") != claims.subject:
            invalid = "session_expired"
        else:
            ts = cp.get("ts")
            if isinstance(ts, (int, float)):
                metrics.resume_gap_seconds.observe(max(0.0, time.time() - ts))
            ho = cp.get("ho")
            if isinstance(ho, (int, float)):
                metrics.handoff_seconds.observe(max(0.0, time.time() - ho))
        if cp is not None and sync is not None and isinstance(cp.get("edge"), str):
            # The client left its previous edge: if that edge is dead,
            # move its rooms now rather than when its leases lapse.
            sync.suspect(cp["edge"])
    else:
        invalid = "resume_rejected"
    stats.resumes[invalid or "resumed"] += 1
    return ResumeOutcome(sid, resumed, invalid, attempt, dict(req.rooms))


async def rejoin(session: ClientSession, rooms: dict[str, Any], invalid: str, hub: Hub,
                 stats: EdgeStats) -> None:
    """Re-join the rooms of a resumed session; one RESUMED frame per room (``forbidden``
    for a room its claims no longer allow).  Stops when the session closes."""
    for room, (flags, epoch, seq) in rooms.items():
        if not session.claims.may_join(room):
            session.send(encode(Resumed(room, False, epoch, seq, 0, "forbidden", {})))
            stats.recoveries["not_recovered"] += 1
            continue
        session.rooms.add(room)
        session.room_flags[room] = flags
        await hub.resume_join(session, room, flags, (epoch, seq), invalid)
        if session.closed:
            return
