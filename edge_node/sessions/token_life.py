"""A session's token over the connection's life: REFRESH replaces it, expiry ends it.

The token is verified at HELLO (:mod:`.handshake`); after that:

- :func:`refresh` answers a REFRESH frame (docs/protocol.md, 37 REFRESH): the new
  token must verify against the edge's secrets and name the session's subject and
  kind; its claims then replace the session's (every later permission check reads
  ``session.claims``), the rooms they no longer allow are left, and REFRESHED names
  them.  A refused refresh is an ERROR answering the request (4401 bad token, 4402
  already expired, 4403 another subject or kind); the old token stays in force.
- :func:`expired` lists the sessions whose token's ``exp`` has passed: the server
  closes them with 4402 (:data:`EXPIRED_REASON`), about once a second.

Both take the wall-clock ``now`` (Unix seconds, the unit of ``exp``) from the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from client_sdk.protocol import (
    Claims,
    ErrorCode,
    Refresh,
    Refreshed,
    TokenError,
    TokenExpired,
    encode,
    verify_token,
)

if TYPE_CHECKING:
    from edge_node.sessions.session import ClientSession

__all__ = ["EXPIRED_REASON", "expired", "refresh"]

#: The close reason of a session whose token expired (code 4402).
EXPIRED_REASON = "token expired; send REFRESH before exp or reconnect with a new token"


class _HasClaims(Protocol):
    claims: Claims


def expired(sessions: Iterable[tuple[str, _HasClaims]], now: float) -> list[str]:
    """Ids of the sessions whose token expired at or before ``now`` (``exp <= now``,
    the rule :func:`~client_sdk.protocol.verify_token` applies at HELLO)."""
    return [sid for sid, s in sessions if s.claims.expires_at <= now]


def refresh(session: ClientSession, f: Refresh, secrets: tuple[bytes, ...],
            now: float) -> str:
    """Answer REFRESH ``f`` on ``session`` (see the module docstring); returns the
    outcome counted in ``edge_token_refreshes_total``: ``ok``, ``unauthorized``,
    ``expired`` or ``forbidden``."""
    try:
        claims = verify_token(f.token, secrets, now=now)
    except TokenExpired:
        session.refuse(f.req_id, ErrorCode.TOKEN_EXPIRED, "the new token has already expired")
        return "expired"
    except TokenError as exc:
        session.refuse(f.req_id, ErrorCode.UNAUTHORIZED, f"new token refused: {exc}")
        return "unauthorized"
    old = session.claims
    if (claims.subject, claims.kind) != (old.subject, old.kind):
        session.refuse(f.req_id, ErrorCode.FORBIDDEN,
                       f"a refreshed token must name the session's subject {old.subject!r} "
                       f"and kind {old.kind!r}")
        return "forbidden"
    session.replace_claims(claims)
    left = sorted(r for r in session.rooms if not claims.may_join(r))
    for room in left:
        session.leave_room(room)
    session.send(encode(Refreshed(f.req_id, int(claims.expires_at), tuple(left))))
    return "ok"
