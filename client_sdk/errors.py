"""Exceptions raised by the SDK.  All derive from :class:`EdgeRelayError`."""

from __future__ import annotations

from .protocol.codes import ErrorCode

__all__ = [
    "EdgeRelayError",
    "ConnectError",
    "AuthError",
    "ServerError",
    "ForbiddenError",
    "RateLimitedError",
    "ConnectionLostError",
    "ClientClosedError",
    "RequestTimeoutError",
    "error_for_code",
]


class EdgeRelayError(Exception):
    """Base class of every SDK error."""


class ConnectError(EdgeRelayError):
    """No edge in the URL list accepted the connection."""


class ServerError(EdgeRelayError):
    """The edge answered a request with an ERROR frame (``code``, ``message``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


class AuthError(ServerError):
    """The token was rejected (bad signature, expired, malformed): do not retry."""


class ForbiddenError(ServerError):
    """The token does not allow this room."""


class RateLimitedError(ServerError):
    """Too many frames per second; slow down."""


class ConnectionLostError(EdgeRelayError):
    """The connection dropped before the request was answered."""


class ClientClosedError(EdgeRelayError):
    """The client was closed (by the application or a non-retryable close code)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RequestTimeoutError(EdgeRelayError, TimeoutError):
    """The edge did not answer in time."""


def error_for_code(code: int, message: str) -> ServerError:
    """Map an error code to the most specific :class:`ServerError` subclass."""
    if code in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
        return AuthError(code, message)
    if code == ErrorCode.FORBIDDEN:
        return ForbiddenError(code, message)
    if code == ErrorCode.RATE_LIMITED:
        return RateLimitedError(code, message)
    return ServerError(code, message)
