"""Closing connections that trickle a message: begun, never completed.

A client can hold a connection (and a partly assembled message buffer) open forever
by sending one WebSocket fragment, or one byte of a frame or QUIC record, every so
often: pings are answered, so nothing else notices.  :class:`TrickleWatch` looks at
every session about once a second: a connection whose ``partial_bytes()`` has stayed
above 0 while the session completed no message for longer than ``message_timeout``
is due to be closed with 4008 ``MESSAGE_TIMEOUT`` (docs/protocol.md, close codes).
A client that sends many large messages always has one in flight, but completes
them: the watch restarts at every completed message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["TrickleWatch"]


class _Conn(Protocol):
    def partial_bytes(self) -> int: ...


class _Session(Protocol):
    messages_in: int


class TrickleWatch:
    """Which connections trickle (see the module docstring); pure: ``now`` passed in."""

    def __init__(self, message_timeout: float) -> None:
        self.message_timeout = message_timeout
        #: session id -> (when its current partial message was first seen, the
        #: session's completed-message count then).
        self._since: dict[str, tuple[float, int]] = {}

    def due(self, sessions: Iterable[tuple[str, _Session, _Conn]], now: float) -> list[str]:
        """Session ids whose connection has been completing one message for longer
        than ``message_timeout``.  Sessions not listed are forgotten."""
        since, out, seen = self._since, [], set()
        for sid, session, conn in sessions:
            if conn.partial_bytes() <= 0:
                continue
            seen.add(sid)
            mark = since.get(sid)
            if mark is None or mark[1] != session.messages_in:
                since[sid] = (now, session.messages_in)
            elif now - mark[0] > self.message_timeout:
                out.append(sid)
        for sid in [s for s in since if s not in seen]:
            del since[sid]
        return out
