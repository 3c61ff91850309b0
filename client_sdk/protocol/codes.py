"""Error and close codes, grouped in ranges that tell a client what to do next.

The same numbers are used as WebSocket close codes and as the ``code`` field of
an ERROR frame, so one table serves both:

=============  ======================  =========================================
range          :class:`Retry`          what the client does
=============  ======================  =========================================
4000 - 4099    ``RECONNECT``           reconnect (same or any edge) with backoff
4100 - 4199    ``RECONNECT_ELSEWHERE``  reconnect to another edge (neighbour list)
4400 - 4499    ``NEVER``               do not reconnect: fix the token or request
=============  ======================  =========================================

An ERROR frame answering a request (``req_id`` set) never closes the
connection by itself; only a close frame does.  Codes outside the ranges (for
example the standard 1000-1015 WebSocket codes) are classified by
:func:`retry_for_close` too: abnormal closes are ``RECONNECT``, a normal close
(1000) is ``NEVER``.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "Retry", "retry_for", "retry_for_close"]


class Retry(enum.Enum):
    """What a client should do after receiving a code."""

    RECONNECT = "reconnect"
    RECONNECT_ELSEWHERE = "reconnect_elsewhere"
    NEVER = "never"


class ErrorCode(enum.IntEnum):
    """Every code the edge may send, as close code or in an ERROR frame."""

    # 4000-4099: transient, reconnect with backoff.
    INTERNAL = 4000
    SLOW_CONSUMER = 4001
    PING_TIMEOUT = 4002
    RATE_LIMITED = 4003
    OVERLOADED = 4004
    PUBLISH_TIMEOUT = 4005
    HANDSHAKE_TIMEOUT = 4006
    ROOM_FAILED = 4007
    MESSAGE_TIMEOUT = 4008
    #: A function (RPC) did not return within its time limit (its effects are unknown).
    FUNCTION_TIMEOUT = 4009
    #: Too many function calls in flight (on the edge or from this client): retry later.
    FUNCTION_BUSY = 4010
    #: A function raised an unexpected exception (the edge's log has the traceback).
    FUNCTION_FAILED = 4011
    # 4100-4199: this edge is going away, go to a neighbour.
    SHUTTING_DOWN = 4100
    HANDOFF = 4101
    # 4400-4499: the client must change something; reconnecting will not help.
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    TOKEN_EXPIRED = 4402
    FORBIDDEN = 4403
    NOT_JOINED = 4404
    SESSION_TAKEN_OVER = 4409
    JOIN_REFUSED = 4410
    INPUT_REJECTED = 4411
    UNSUPPORTED_VERSION = 4405
    UNKNOWN_TYPE = 4406
    TOO_MANY_ROOMS = 4407
    STALE_VERSION = 4408
    FRAME_TOO_LARGE = 4413
    #: No function of that name on this edge.
    UNKNOWN_FUNCTION = 4414


def retry_for(code: int) -> Retry:
    """Classify an application code (4000-4999) by its range."""
    if 4000 <= code < 4100:
        return Retry.RECONNECT
    if 4100 <= code < 4200:
        return Retry.RECONNECT_ELSEWHERE
    if 4400 <= code < 4500:
        return Retry.NEVER
    return Retry.RECONNECT


def retry_for_close(code: int | None) -> Retry:
    """Classify a WebSocket close code (``None`` = connection lost without a close)."""
    if code is None:
        return Retry.RECONNECT
    if code == 1000:
        return Retry.NEVER
    if code == 1001:  # "going away": the server is shutting down.
        return Retry.RECONNECT_ELSEWHERE
    if code in (1002, 1003, 1007, 1008, 1009):  # protocol / policy / too big
        return Retry.NEVER
    return retry_for(code)
