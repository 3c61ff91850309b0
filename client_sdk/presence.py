"""Who is in a room, as one client sees it: a member list that does not flap (sans-I/O).

A room joined with ``presence=True`` keeps a :class:`PresenceView`: it starts from the
room's member list (fetched right after JOINED), follows the edge's presence events,
and is fetched again after each resume (the events missed meanwhile come out as the
difference).  What the application sees (``sub.members``, ``sub.presence_events()``):

- **no repeats**: a join of a member already listed, or a leave of one not listed, is
  dropped (a resumed session may be announced again by the edge it resumed on);
- **a grace before a lost member's leave**: a member whose connection the edge saw
  end without a normal close (PRESENCE_LEAVE ``lost``), or that is missing from the
  list fetched after this client's own resume, is kept, marked *reconnecting*
  (``sub.reconnecting``), for ``grace`` seconds; if it comes back meanwhile (its
  session resumed: the same session id joins again) nothing is reported, otherwise
  the leave is, at the end of the grace.  A network blip of a second does not show
  as a leave and a join; a member that is really gone leaves ``grace`` seconds late.
  A member that left on purpose (LEAVE, a normal close) is reported at once, as with
  ``grace=0``.

``now`` is passed in (the event loop's clock); :meth:`next_deadline` says when
:meth:`expire` is due.
"""

from __future__ import annotations

from collections.abc import Iterable

from .protocol import Member
from .protocol.events import PresenceEvent

__all__ = ["PresenceView"]


class PresenceView:
    """One room's members (see the module docstring)."""

    def __init__(self, room: str, grace: float) -> None:
        if grace < 0:
            raise ValueError("presence grace must be >= 0")
        self.room = room
        self.grace = grace
        self._members: dict[str, Member] = {}
        #: Members reported gone, kept until the deadline: session id -> deadline.
        self._leaving: dict[str, float] = {}
        self.loaded = False

    @property
    def members(self) -> list[Member]:
        """Every member, reconnecting ones included, by session id."""
        return [self._members[s] for s in sorted(self._members)]

    @property
    def reconnecting(self) -> list[Member]:
        """Members reported gone whose grace is running."""
        return [self._members[s] for s in sorted(self._leaving)]

    def load(self, members: Iterable[Member], now: float) -> list[PresenceEvent]:
        """The room's member list as the edge sent it.  The first load sets the view
        (no events); a later one (after a resume) reports the difference: a new member
        as a join, a missing one as a leave (after the grace)."""
        fresh = {m.session_id: m for m in members}
        if not self.loaded:
            self.loaded = True
            self._members = fresh
            return []
        out: list[PresenceEvent] = []
        for m in fresh.values():
            out += self.joined(m, now)
        for sid in [s for s in self._members if s not in fresh]:
            out += self.left(self._members[sid], now)
        return out

    def joined(self, m: Member, now: float) -> list[PresenceEvent]:
        """The edge reports ``m`` joined: an event unless it was listed already."""
        sid = m.session_id
        if sid in self._members:
            self._leaving.pop(sid, None)  # back within the grace: it never left
            return []
        self._members[sid] = m
        return [PresenceEvent(self.room, True, m)]

    def left(self, m: Member, now: float, lost: bool = True) -> list[PresenceEvent]:
        """The edge reports ``m`` left: held for the grace when ``lost`` (no event
        yet), else an event now; nothing for a member not listed."""
        sid = m.session_id
        if sid not in self._members or (lost and sid in self._leaving):
            return []
        self._leaving.pop(sid, None)
        if lost and self.grace > 0:
            self._leaving[sid] = now + self.grace
            return []
        del self._members[sid]
        return [PresenceEvent(self.room, False, m, lost)]

    def expire(self, now: float) -> list[PresenceEvent]:
        """Leaves whose grace ended by ``now``, reported."""
        out = []
        for sid in [s for s, t in self._leaving.items() if t <= now]:
            del self._leaving[sid]
            out.append(PresenceEvent(self.room, False, self._members.pop(sid), True))
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to report; None: nothing held."""
        return min(self._leaving.values(), default=None)
