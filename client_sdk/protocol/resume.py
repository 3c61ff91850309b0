"""Where a client session resumes from (sans-I/O): its tracked rooms and its HELLOs.

Part of the client core (:class:`~.connection.ClientConnection`).  Each
tracked room's :class:`~.rooms.RoomState` holds its last reliable position
and the dedupe memory; the HELLO of every new link carries those positions
(the resume map), and the edge replays each room from there.
"""

from __future__ import annotations

from .codec import encode
from .limits import PROTOCOL_VERSION
from .messages import Hello
from .rooms import RoomState

__all__ = ["ResumeTracker"]


class ResumeTracker:
    """The rooms one session tracks (``rooms``: room -> :class:`RoomState`) and
    its connection attempts (``attempts``), for the resume map.

    ``rooms`` is the table itself: the core delivers the messages of the rooms
    in it (:meth:`RoomState.accept`) and shows it as ``ClientConnection.rooms``;
    only :meth:`track` and :meth:`forget` change it.  The session's identity
    (id and resume token, from the WELCOME) is the core's, passed in.
    """

    __slots__ = ("attempts", "rooms")

    def __init__(self) -> None:
        self.rooms: dict[str, RoomState] = {}
        self.attempts = 0

    def track(self, room: str, flags: int) -> RoomState:
        """``room``'s state, new (at position 0) unless already tracked (then its
        first ``flags`` stay)."""
        state = self.rooms.get(room)
        if state is None:
            state = self.rooms[room] = RoomState(room, flags)
        return state

    def forget(self, room: str) -> None:
        """Stop tracking ``room`` (its messages are no longer delivered)."""
        self.rooms.pop(room, None)

    def resume_map(self, session_id: str, resume_token: str) -> dict[str, object] | None:
        """The HELLO ``resume`` map of session ``session_id``: None when there is no
        session to resume yet (no id or token)."""
        if not session_id or not resume_token:
            return None
        # "att" orders this client's connection attempts: if an abandoned attempt
        # completes late on the edge, it must not displace the newer connection.
        return {"sid": session_id, "rt": resume_token, "att": self.attempts,
                "rooms": {r: st.resume_entry() for r, st in self.rooms.items()}}

    def hello(self, token: str, name: str, session_id: str, resume_token: str) -> bytes:
        """The encoded HELLO of a new connection attempt (counted first), with the
        :meth:`resume_map`."""
        self.attempts += 1
        return encode(Hello(PROTOCOL_VERSION, token, name,
                            self.resume_map(session_id, resume_token)))
