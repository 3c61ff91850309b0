"""The token frames (types 37-38): a client replaces its session's token on a live
connection (REFRESH) before the old one expires.

Wire shapes (docs/protocol.md § token refresh, golden vectors in
tests/golden/frames.json):

=====  ==========  ==========================================  ===============
type   name        elements after the type                      direction
=====  ==========  ==========================================  ===============
37     REFRESH     req_id, token                                client → edge
38     REFRESHED   req_id, expires_at, rooms_left               edge → client
=====  ==========  ==========================================  ===============

The new token must verify and name the same subject and kind as the session's; its
claims then replace the old ones for everything that follows (joins, publishes,
functions, telemetry).  ``expires_at`` is the new token's ``exp`` (Unix seconds);
``rooms_left`` lists the rooms the session was in that the new token no longer
allows: the edge has left them.  A refused refresh is an ERROR answering ``req_id``
(4401 bad token, 4402 already expired, 4403 another subject or kind); the session
keeps its old token until that one expires, when the edge closes it with 4402.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import MalformedFrame
from .fields import arity, string, uint

__all__ = ["Refresh", "Refreshed", "TOKEN_ENCODERS", "TOKEN_PARSERS"]


@dataclass(frozen=True, slots=True)
class Refresh:
    """Client → edge: ``[37, req_id, token]`` — use ``token`` from now on.

    Answered by REFRESHED or ERROR (same ``req_id``)."""

    req_id: int
    token: str


@dataclass(frozen=True, slots=True)
class Refreshed:
    """Edge → client: ``[38, req_id, expires_at, rooms_left]`` — the new token is the
    session's until ``expires_at`` (Unix seconds); the rooms in ``rooms_left`` were
    left because it does not allow them."""

    req_id: int
    expires_at: int
    rooms_left: tuple[str, ...] = ()


TOKEN_ENCODERS: dict[type[Any], Any] = {
    Refresh: lambda f: [37, f.req_id, f.token],
    Refreshed: lambda f: [38, f.req_id, f.expires_at, list(f.rooms_left)],
}


def _p_refresh(d: Any, o: list[Any]) -> Refresh:
    arity(o, 3, "REFRESH")
    token = string(o[2], "token")
    if len(token) > d.limits.max_token_bytes:
        raise MalformedFrame("token too long")
    return Refresh(uint(o[1], "req_id"), token)


def _p_refreshed(d: Any, o: list[Any]) -> Refreshed:
    arity(o, 4, "REFRESHED")
    left = o[3]
    if not isinstance(left, list):
        raise MalformedFrame("rooms_left must be an array of room names")
    return Refreshed(uint(o[1], "req_id"), uint(o[2], "expires_at"),
                     tuple(string(r, "room") for r in left))


TOKEN_PARSERS: dict[int, Any] = {37: _p_refresh, 38: _p_refreshed}
