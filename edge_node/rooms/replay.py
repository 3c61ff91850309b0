"""Resume planning for one room (sans-I/O): what a client that was at position ``pos``
missed, from the room's ring when it still holds it, else from the room's history.

Contract: call :func:`needs_history`; if it is true and a store exists, read
``history_after(pos, max_replay + 1)`` and pass it as :class:`History` to
:func:`plan_resume` (``None`` without a store).  Between the read and
:func:`plan_resume` the driver must not yield: the ring's tail and the live stream
then join without a gap or an overlap.  Never a partial, silent replay: every answer
is either complete (``recovered: true``) or ``recovered: false`` with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from client_sdk.protocol import HistoryPage, Resumed, encode_message
from edge_node.rooms.events import Pos, Record
from edge_node.rooms.machine import RoomMachine, RoomState

__all__ = ["History", "needs_history", "plan_resume", "not_recovered", "history_page"]


@dataclass(frozen=True, slots=True)
class History:
    """The store's answer for the records after a position."""

    records: tuple[Record, ...] = ()
    #: Trimming (or a recorded loss) left a gap history cannot fill.
    gap: bool = False
    first: Pos | None = None
    #: The store could not be reached.
    unavailable: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def needs_history(m: RoomMachine[Any], pos: Pos) -> bool:
    """True when the ring does not reach back to ``pos`` (the client missed more):
    its oldest message is neither at or before ``pos`` nor the very next one."""
    if not pos < m.last:
        return False
    ring = m.ring
    if not ring:
        return True
    first = (ring[0][0], ring[0][1])
    return not (first <= pos or first == (pos[0], pos[1] + 1))


def history_page(req_id: int, room: str, records: Sequence[Record], limit: int, gap: bool,
                 budget: int) -> HistoryPage:
    """A HISTORY_PAGE of at most ``limit`` of ``records`` (read after the position asked,
    one more than ``limit`` if there are more), cut where the frame would outgrow
    ``budget`` bytes (``more`` then says so)."""
    items: list[tuple[int, int, str, bytes, int]] = []
    size = 0
    for r in records[:limit]:
        size += len(r.payload) + len(r.sender) + 32
        if items and size > budget:
            return HistoryPage(req_id, room, tuple(items), True, gap)
        items.append((r.epoch, r.seq, r.sender, r.payload, r.idem))
    return HistoryPage(req_id, room, tuple(items), len(records) > limit, gap)


def not_recovered(m: RoomMachine[Any], pos: Pos, reason: str,
                  info: dict[str, Any] | None = None) -> Resumed:
    """A RESUMED frame that says the gap after ``pos`` cannot be filled, and why."""
    return Resumed(m.name, False, pos[0], pos[1], 0, reason, info or {})


def plan_resume(m: RoomMachine[Any], session_id: str, pos: Pos,
                history: History | None) -> tuple[Resumed, list[bytes]]:
    """The RESUMED frame and the MESSAGE bodies to replay, in order, for a client at
    ``pos`` (records after it, at most ``max_replay`` of them).

    A mirror records where the replay ended (``catchup``) so that records the stream
    reader delivers later up to there are not pushed to this member twice.
    """
    max_replay = m.cfg.max_replay
    bodies: list[bytes] = []
    last = pos
    consulted = needs_history(m, pos)
    if consulted:
        if history is None:
            return not_recovered(m, pos, "no_history"), []
        if history.unavailable:
            return not_recovered(m, pos, "history_unavailable"), []
        if history.gap:
            first = history.first
            return not_recovered(m, pos, "history_trimmed", {
                "first_available": list(first) if first else None}), []
        if len(history.records) > max_replay:
            return not_recovered(m, pos, "too_many", {"max_replay": max_replay}), []
        for r in history.records:
            bodies.append(encode_message(m.name, r.epoch, r.seq, r.sender, r.payload, r.idem))
            last = (r.epoch, r.seq)
    tail = [(e, sq, b) for e, sq, b in m.ring if (e, sq) > last]
    if consulted and tail and tail[0][0] == last[0] and tail[0][1] != last[1] + 1:
        # History ended before the ring begins (appends not yet durable, tiny ring):
        # the messages in between are in neither.
        return not_recovered(m, pos, "overflow"), []
    bodies.extend(b for _e, _sq, b in tail)
    if len(bodies) > max_replay:
        return not_recovered(m, pos, "too_many", {"max_replay": max_replay}), []
    if tail:
        last = (tail[-1][0], tail[-1][1])
    if m.state is not RoomState.OWNED and m.state is not RoomState.LOCAL and last > m.last:
        m.catchup[session_id] = last  # the stream reader has not got there yet
    return Resumed(m.name, True, pos[0], pos[1], len(bodies), "",
                   {"to": [last[0], last[1]]}), bodies
