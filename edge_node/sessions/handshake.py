"""The first frame of a session: read and check HELLO, and parse its resume request.

Both are shared by every transport (they take a
:class:`~edge_node.transports.connection.SessionConn`) and raise
:class:`~edge_node.sessions.session.SessionClose` with the close code and reason the
client is to get (protocol.md §1): no HELLO in time ``HANDSHAKE_TIMEOUT``, a text or
non-HELLO first frame ``BAD_REQUEST``, another protocol version
``UNSUPPORTED_VERSION``, a bad or expired token its own code, a malformed resume
``BAD_REQUEST``, too many rooms to resume ``TOO_MANY_ROOMS``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from client_sdk.protocol import (
    PROTOCOL_VERSION,
    Decoder,
    ErrorCode,
    Hello,
    MalformedFrame,
    ProtocolError,
    delivery_of,
    verify_token,
)
from edge_node.sessions.session import SessionClose
from edge_node.transports.connection import SessionConn

__all__ = ["ResumeRequest", "parse_resume", "read_hello"]


async def read_hello(conn: SessionConn, decoder: Decoder, secrets: tuple[bytes, ...],
                     timeout: float) -> tuple[Hello, Any]:
    """Wait up to ``timeout`` s for HELLO on ``conn``; return it and the token's claims."""
    try:
        raw = await asyncio.wait_for(conn.recv(), timeout)
    except TimeoutError:
        raise SessionClose(ErrorCode.HANDSHAKE_TIMEOUT, "no HELLO in time") from None
    if isinstance(raw, str):
        raise SessionClose(ErrorCode.BAD_REQUEST, "first frame must be a binary HELLO")
    try:
        frame = decoder.decode(raw)
    except ProtocolError as exc:
        raise SessionClose(exc.code, str(exc)) from exc
    if not isinstance(frame, Hello):
        raise SessionClose(ErrorCode.BAD_REQUEST, "first frame must be HELLO")
    if frame.version != PROTOCOL_VERSION:
        raise SessionClose(ErrorCode.UNSUPPORTED_VERSION,
                           f"protocol version {frame.version} not supported; "
                           f"this edge speaks {PROTOCOL_VERSION}")
    try:
        claims = verify_token(frame.token, secrets, now=time.time())
    except ProtocolError as exc:
        raise SessionClose(exc.code, str(exc)) from exc
    return frame, claims


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """HELLO's ``resume``: the session, its resume token, which connection attempt this
    is, and room -> ``[flags, epoch, seq]`` (the last position the client has)."""

    sid: str
    rt: str
    attempt: int
    rooms: dict[str, list[int]]


def parse_resume(resume: Any, max_rooms: int) -> ResumeRequest:
    """Check the shape of HELLO's ``resume`` (``{sid, rt, rooms, att?}``); nothing is
    looked up.  More than ``max_rooms`` rooms is refused before any room is read."""
    if not isinstance(resume, dict):
        raise SessionClose(ErrorCode.BAD_REQUEST, "resume must be {sid, rt, rooms}")
    sid, rt, rooms = resume.get("sid"), resume.get("rt"), resume.get("rooms", {})
    att = resume.get("att", 0)
    if type(att) is not int or att < 0:
        raise SessionClose(ErrorCode.BAD_REQUEST, "resume attempt must be an unsigned int")
    if not isinstance(sid, str) or not isinstance(rt, str) or not isinstance(rooms, dict):
        raise SessionClose(ErrorCode.BAD_REQUEST, "resume must be {sid, rt, rooms}")
    if len(rooms) > max_rooms:
        raise SessionClose(ErrorCode.TOO_MANY_ROOMS, "too many rooms to resume")
    out: dict[str, list[int]] = {}
    for room, v in rooms.items():
        if (not isinstance(room, str) or not room or not isinstance(v, list) or len(v) != 3
                or not all(type(x) is int and x >= 0 for x in v)):
            raise SessionClose(ErrorCode.BAD_REQUEST,
                               "resume rooms must map room -> [flags, epoch, seq]")
        try:
            delivery_of(v[0])  # the flags hold a delivery policy that exists
        except MalformedFrame as exc:
            raise SessionClose(ErrorCode.BAD_REQUEST, f"resume room {room!r}: {exc}") from None
        out[room] = v
    return ResumeRequest(sid, rt, att, out)
