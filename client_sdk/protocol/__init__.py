"""The wire contract, sans-I/O: frames, codec, codes, limits and tokens.

Nothing here imports asyncio or a network library; it is tested with plain
bytes.  The edge, the origin, the benchmarks and the SDK all build on it.
"""

from __future__ import annotations

from .codec import Decoder, decode, encode, encode_message
from .codes import ErrorCode, Retry, retry_for, retry_for_close
from .errors import (
    FrameTooLarge,
    MalformedFrame,
    ProtocolError,
    TokenError,
    TokenExpired,
    UnknownMessageType,
    UnsupportedVersion,
)
from .limits import DEFAULT_LIMITS, PROTOCOL_VERSION, Limits
from .messages import (
    JOIN_NO_ECHO,
    JOIN_PRESENCE,
    Ack,
    Error,
    Frame,
    Handoff,
    Hello,
    Join,
    Joined,
    Leave,
    Member,
    Message,
    MessageType,
    Neighbours,
    Ping,
    Pong,
    PresenceJoin,
    PresenceLeave,
    PresenceList,
    PresenceMembers,
    Publish,
    Resume,
    Resumed,
    Welcome,
)
from .tokens import KINDS, Claims, mint_token, room_allowed, verify_token

__all__ = [
    "Ack",
    "Claims",
    "DEFAULT_LIMITS",
    "Decoder",
    "Error",
    "ErrorCode",
    "Frame",
    "FrameTooLarge",
    "Handoff",
    "Hello",
    "JOIN_NO_ECHO",
    "JOIN_PRESENCE",
    "Join",
    "Joined",
    "KINDS",
    "Leave",
    "Limits",
    "MalformedFrame",
    "Member",
    "Message",
    "MessageType",
    "Neighbours",
    "PROTOCOL_VERSION",
    "PresenceJoin",
    "PresenceLeave",
    "PresenceList",
    "PresenceMembers",
    "Ping",
    "Pong",
    "ProtocolError",
    "Publish",
    "Resume",
    "Resumed",
    "Retry",
    "TokenError",
    "TokenExpired",
    "UnknownMessageType",
    "UnsupportedVersion",
    "Welcome",
    "decode",
    "encode",
    "encode_message",
    "mint_token",
    "retry_for",
    "retry_for_close",
    "room_allowed",
    "verify_token",
]
