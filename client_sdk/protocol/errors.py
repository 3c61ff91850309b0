"""The protocol's exception hierarchy: every error carries its wire code."""

from __future__ import annotations

from .codes import ErrorCode

__all__ = [
    "ProtocolError",
    "MalformedFrame",
    "FrameTooLarge",
    "UnknownMessageType",
    "UnsupportedVersion",
    "TokenError",
    "TokenExpired",
]


class ProtocolError(Exception):
    """Base of every error raised by :mod:`client_sdk.protocol`.

    ``code`` is the :class:`ErrorCode` that goes on the wire; ``str(exc)`` is a
    short, client-safe explanation (never internal details).
    """

    code: ErrorCode = ErrorCode.BAD_REQUEST
    #: Request id of the offending frame when it could be read (0 otherwise), so
    #: the error answers that request instead of leaving it pending.
    req_id: int = 0

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class MalformedFrame(ProtocolError):
    """Bytes that are not a valid frame (bad msgpack, wrong shape or types)."""

    code = ErrorCode.BAD_REQUEST


class FrameTooLarge(ProtocolError):
    """A frame over :attr:`Limits.max_frame_bytes`, rejected before decoding."""

    code = ErrorCode.FRAME_TOO_LARGE


class UnknownMessageType(ProtocolError):
    """A well-formed frame whose type number this version does not know."""

    code = ErrorCode.UNKNOWN_TYPE

    def __init__(self, message: str, type_id: int, req_id: int = 0) -> None:
        super().__init__(message)
        self.type_id = type_id
        self.req_id = req_id


class UnsupportedVersion(ProtocolError):
    """The client's protocol version is not served by this edge."""

    code = ErrorCode.UNSUPPORTED_VERSION


class TokenError(ProtocolError):
    """A token that is malformed or whose signature does not verify."""

    code = ErrorCode.UNAUTHORIZED


class TokenExpired(TokenError):
    """A token whose ``exp`` claim is in the past."""

    code = ErrorCode.TOKEN_EXPIRED
