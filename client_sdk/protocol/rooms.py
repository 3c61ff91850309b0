"""Per-room state of a client session (sans-I/O): position, dedupe, echo.

The core keeps one :class:`RoomState` per joined room.  Its ``position`` is the
last reliable position received, which goes into the resume map of the next
HELLO; the edge replays what follows it.  Copies are dropped here, before the
application sees anything.
"""

from __future__ import annotations

from ..dedupe import RecentKeys
from .messages import JOIN_NO_ECHO, Message

__all__ = ["IDEM_WINDOW", "RoomState"]

#: Idempotency keys remembered per sender and room (copies re-published after a
#: failover arrive within a few hundred messages of the original).
IDEM_WINDOW = 1024


class RoomState:
    """One joined room: ``flags`` (as joined), ``position`` and the dedupe memory.

    ``duplicates`` counts copies dropped (at or before ``position``, or a
    ``(sender, idem)`` already delivered); ``own_skipped`` counts this client's
    own publishes dropped because the room was joined with ``echo=False``.
    """

    __slots__ = ("_idems", "duplicates", "flags", "no_echo", "own_skipped", "position", "room")

    def __init__(self, room: str, flags: int) -> None:
        self.room = room
        self.flags = flags
        self.no_echo = bool(flags & JOIN_NO_ECHO)
        self.position: tuple[int, int] = (0, 0)
        self.duplicates = 0
        self.own_skipped = 0
        self._idems: dict[str, RecentKeys[bool]] = {}

    def accept(self, m: Message, own_session: str) -> bool:
        """True when ``m`` is new and for the application (hot path: once per message).

        A reliable message advances ``position`` even when it is then skipped as
        an own publish (``echo=False``): a later resume must not replay it again.
        """
        epoch = m.epoch
        if epoch:
            pos = (epoch, m.seq)
            if pos <= self.position:
                self.duplicates += 1
                return False
            self.position = pos
            idem = m.idem
            if idem:
                seen = self._idems.get(m.sender)
                if seen is None:
                    seen = self._idems[m.sender] = RecentKeys(IDEM_WINDOW)
                elif idem in seen:
                    self.duplicates += 1
                    return False
                seen.add(idem, True)
        if self.no_echo and m.sender == own_session:
            # The edge filters our own live publishes, but the replay after a
            # resume comes from the room's history, unfiltered.
            self.own_skipped += 1
            return False
        return True

    def joined(self, position: tuple[int, int]) -> None:
        """The JOINED reply says the room starts at ``position`` (it never moves back)."""
        self.position = max(self.position, position)

    def resume_entry(self) -> list[int]:
        """``[flags, epoch, seq]`` for the HELLO resume map."""
        return [self.flags, *self.position]
