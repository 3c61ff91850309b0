"""The once-a-second look at every connection: which to close, with which code.

Two rules, each in its own module: a connection that trickles a message (begun,
never completed, :mod:`.trickle`) is closed with 4008 ``MESSAGE_TIMEOUT``; a session
whose token expired without a REFRESH (:mod:`.token_life`) with 4402
``TOKEN_EXPIRED``.  :class:`SessionSweep` is pure: the server passes its sessions,
the loop clock and the wall clock, and closes what it is told, once per session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from client_sdk.protocol import ErrorCode
from edge_node.sessions import token_life
from edge_node.sessions.trickle import TrickleWatch

__all__ = ["SessionSweep"]


class SessionSweep:
    """Which connections to close (see the module docstring)."""

    #: Seconds between two looks.
    INTERVAL = 1.0

    def __init__(self, message_timeout: float) -> None:
        self.message_timeout = message_timeout
        self.trickle = TrickleWatch(message_timeout)
        self._at = float("-inf")
        #: Sessions already told to close for an expired token (closed once each; a
        #: new connection under the same id is another session object).
        self._expiring: dict[str, object] = {}

    def due(self, sessions: Mapping[str, tuple[Any, Any]], now: float, wall: float
            ) -> list[tuple[str, int, str]]:
        """``(session id, close code, reason)`` for each connection to close now;
        empty until :attr:`INTERVAL` has passed since the last look (loop clock
        ``now``).  ``sessions``: id -> (session, connection); ``wall``: Unix time."""
        if now - self._at < self.INTERVAL:
            return []
        self._at = now
        out = [(sid, int(ErrorCode.MESSAGE_TIMEOUT), "a message was not completed within "
                f"{self.message_timeout:g} s")
               for sid in self.trickle.due(((sid, s, c) for sid, (s, c) in sessions.items()),
                                           now)]
        expiring = self._expiring = {sid: s for sid, s in self._expiring.items()
                                     if sid in sessions and sessions[sid][0] is s}
        for sid in token_life.expired(((sid, s) for sid, (s, _c) in sessions.items()
                                       if sid not in expiring), wall):
            expiring[sid] = sessions[sid][0]
            out.append((sid, int(ErrorCode.TOKEN_EXPIRED), token_life.EXPIRED_REASON))
        return out
