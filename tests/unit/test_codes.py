"""Error/close codes: every code sits in the range that tells the client what to do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from client_sdk.protocol import ErrorCode, Retry, retry_for, retry_for_close
from client_sdk.protocol import errors as protocol_errors

#: The intended classification of every code.  A new ErrorCode must be added
#: here (test_every_code_is_classified fails otherwise), which forces a
#: decision about what clients do when they see it.
EXPECTED: dict[ErrorCode, Retry] = {
    ErrorCode.INTERNAL: Retry.RECONNECT,
    ErrorCode.SLOW_CONSUMER: Retry.RECONNECT,
    ErrorCode.PING_TIMEOUT: Retry.RECONNECT,
    ErrorCode.RATE_LIMITED: Retry.RECONNECT,
    ErrorCode.OVERLOADED: Retry.RECONNECT,
    ErrorCode.PUBLISH_TIMEOUT: Retry.RECONNECT,
    ErrorCode.HANDSHAKE_TIMEOUT: Retry.RECONNECT,
    # A game room's handler raised or blocked: join it again later.
    ErrorCode.ROOM_FAILED: Retry.RECONNECT,
    # A message trickled past message_timeout: a slow link, or a client bug; a fresh
    # connection may do better.
    ErrorCode.MESSAGE_TIMEOUT: Retry.RECONNECT,
    # A function timed out, was too busy or crashed: the call may succeed later.
    ErrorCode.FUNCTION_TIMEOUT: Retry.RECONNECT,
    ErrorCode.FUNCTION_BUSY: Retry.RECONNECT,
    ErrorCode.FUNCTION_FAILED: Retry.RECONNECT,
    # Drain: the edge closes the connections that did not move with 4100; a
    # client that moved (HANDOFF, make before break) closes the old one with 4101.
    ErrorCode.SHUTTING_DOWN: Retry.RECONNECT_ELSEWHERE,
    ErrorCode.HANDOFF: Retry.RECONNECT_ELSEWHERE,
    ErrorCode.BAD_REQUEST: Retry.NEVER,
    ErrorCode.UNAUTHORIZED: Retry.NEVER,
    ErrorCode.TOKEN_EXPIRED: Retry.NEVER,
    ErrorCode.FORBIDDEN: Retry.NEVER,
    ErrorCode.NOT_JOINED: Retry.NEVER,
    # Another connection (a higher "att") holds this session, or this one is a
    # late, abandoned attempt: reconnecting would take the session back.
    ErrorCode.SESSION_TAKEN_OVER: Retry.NEVER,
    ErrorCode.UNSUPPORTED_VERSION: Retry.NEVER,
    ErrorCode.UNKNOWN_TYPE: Retry.NEVER,
    ErrorCode.TOO_MANY_ROOMS: Retry.NEVER,
    # A device reported a shadow version not above the one the edge knows.
    ErrorCode.STALE_VERSION: Retry.NEVER,
    ErrorCode.FRAME_TOO_LARGE: Retry.NEVER,
    # A game room refused the join (full, or its handler said no) or an input.
    ErrorCode.JOIN_REFUSED: Retry.NEVER,
    ErrorCode.INPUT_REJECTED: Retry.NEVER,
    # No function of that name: calling it again will not help.
    ErrorCode.UNKNOWN_FUNCTION: Retry.NEVER,
}

_RANGES = {
    Retry.RECONNECT: range(4000, 4100),
    Retry.RECONNECT_ELSEWHERE: range(4100, 4200),
    Retry.NEVER: range(4400, 4500),
}


def test_every_code_is_classified() -> None:
    assert set(EXPECTED) == set(ErrorCode)


def test_codes_are_unique() -> None:
    values = [int(c) for c in ErrorCode]
    assert len(values) == len(set(values))


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_code_lands_in_its_range(code: ErrorCode) -> None:
    want = EXPECTED[code]
    assert int(code) in _RANGES[want]
    assert retry_for(code) is want
    assert retry_for(int(code)) is want
    # The same number used as a WebSocket close code means the same thing.
    assert retry_for_close(int(code)) is want


@pytest.mark.parametrize(
    ("code", "want"),
    [
        (4000, Retry.RECONNECT),
        (4099, Retry.RECONNECT),
        (4100, Retry.RECONNECT_ELSEWHERE),
        (4199, Retry.RECONNECT_ELSEWHERE),
        (4400, Retry.NEVER),
        (4499, Retry.NEVER),
        # Outside the defined ranges a client errs on the side of reconnecting.
        (4200, Retry.RECONNECT),
        (4399, Retry.RECONNECT),
        (4500, Retry.RECONNECT),
        (4999, Retry.RECONNECT),
    ],
)
def test_range_boundaries(code: int, want: Retry) -> None:
    assert retry_for(code) is want


@pytest.mark.parametrize(
    ("code", "want"),
    [
        (None, Retry.RECONNECT),  # connection lost without a close frame
        (1000, Retry.NEVER),  # normal closure: the edge meant it
        (1001, Retry.RECONNECT_ELSEWHERE),  # going away: server shutting down
        (1002, Retry.NEVER),  # protocol error
        (1003, Retry.NEVER),  # unsupported data
        (1006, Retry.RECONNECT),  # abnormal closure
        (1007, Retry.NEVER),  # invalid payload data
        (1008, Retry.NEVER),  # policy violation
        (1009, Retry.NEVER),  # message too big
        (1011, Retry.RECONNECT),  # internal server error
        (1012, Retry.RECONNECT),  # service restart
        (1013, Retry.RECONNECT),  # try again later
        (4001, Retry.RECONNECT),  # SLOW_CONSUMER
        (4100, Retry.RECONNECT_ELSEWHERE),  # SHUTTING_DOWN: end of a drain
        (4101, Retry.RECONNECT_ELSEWHERE),  # HANDOFF: "moved"
        (4401, Retry.NEVER),  # UNAUTHORIZED
        (4409, Retry.NEVER),  # SESSION_TAKEN_OVER: resumed on another connection
    ],
)
def test_retry_for_close(code: int | None, want: Retry) -> None:
    assert retry_for_close(code) is want


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (protocol_errors.ProtocolError, ErrorCode.BAD_REQUEST),
        (protocol_errors.MalformedFrame, ErrorCode.BAD_REQUEST),
        (protocol_errors.FrameTooLarge, ErrorCode.FRAME_TOO_LARGE),
        (protocol_errors.UnsupportedVersion, ErrorCode.UNSUPPORTED_VERSION),
        (protocol_errors.TokenError, ErrorCode.UNAUTHORIZED),
        (protocol_errors.TokenExpired, ErrorCode.TOKEN_EXPIRED),
    ],
)
def test_exceptions_carry_their_wire_code(
    exc: type[protocol_errors.ProtocolError], code: ErrorCode
) -> None:
    err = exc("short reason")
    assert err.code is code
    assert str(err) == "short reason"
    assert retry_for(err.code) is Retry.NEVER


def test_unknown_message_type_error() -> None:
    err = protocol_errors.UnknownMessageType("unknown frame type 99", type_id=99, req_id=7)
    assert err.code is ErrorCode.UNKNOWN_TYPE
    assert (err.type_id, err.req_id) == (99, 7)
    assert protocol_errors.UnknownMessageType("x", type_id=1).req_id == 0


def test_code_override_is_per_instance() -> None:
    err = protocol_errors.ProtocolError("not joined", ErrorCode.NOT_JOINED)
    assert err.code is ErrorCode.NOT_JOINED
    assert protocol_errors.ProtocolError("x").code is ErrorCode.BAD_REQUEST


def test_session_taken_over() -> None:
    assert int(ErrorCode.SESSION_TAKEN_OVER) == 4409
    assert ErrorCode(4409) is ErrorCode.SESSION_TAKEN_OVER
    assert retry_for_close(4409) is Retry.NEVER


def test_drain_and_handover_codes() -> None:
    """docs/protocol.md section 12: a draining edge closes the connections that
    did not move with 4100; the client closes the connection it moved away from
    with 4101 "moved"; a connection that lost the session to a newer attempt
    gets 4409.  The first two send a client to a neighbour, the last one not."""
    assert int(ErrorCode.SHUTTING_DOWN) == 4100
    assert int(ErrorCode.HANDOFF) == 4101
    assert retry_for_close(4100) is Retry.RECONNECT_ELSEWHERE
    assert retry_for_close(4101) is Retry.RECONNECT_ELSEWHERE
    assert retry_for_close(4409) is Retry.NEVER


DOC_FILE = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_CODE_ROW = re.compile(r"^\| (\d{4}) \| `([A-Z_]+)` ", re.MULTILINE)


@pytest.mark.skipif(not DOC_FILE.exists(), reason="docs/protocol.md not present")
def test_protocol_doc_lists_every_code() -> None:
    """The codes table in docs/protocol.md has one row per ErrorCode, with its name."""
    rows = {int(n): name for n, name in _CODE_ROW.findall(DOC_FILE.read_text("utf-8"))}
    assert rows == {int(c): c.name for c in ErrorCode}
