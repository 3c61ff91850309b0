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
    "FunctionError",
    "UnknownFunctionError",
    "FunctionBusyError",
    "FunctionTimeoutError",
    "FunctionFailedError",
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


class FunctionError(EdgeRelayError):
    """An RPC's function raised an application error on purpose: ``kind`` (its name,
    e.g. ``"no_such_player"``) and ``details`` (the value it attached)."""

    def __init__(self, function: str, kind: str, details: object) -> None:
        super().__init__(f"{function}: {kind}" + (f" ({details})" if details is not None
                                                    else ""))
        self.function = function
        self.kind = kind
        self.details = details


class UnknownFunctionError(ServerError):
    """No function of that name on the edge (4414)."""


class FunctionBusyError(ServerError):
    """Too many calls in flight on the edge or from this connection (4010): retry later."""


class FunctionTimeoutError(ServerError):
    """The function did not return in time (4009); whether it had effects is unknown."""


class FunctionFailedError(ServerError):
    """The function crashed or returned what cannot be sent (4011)."""


_BY_CODE: dict[int, type[ServerError]] = {
    ErrorCode.FORBIDDEN: ForbiddenError,
    ErrorCode.RATE_LIMITED: RateLimitedError,
    ErrorCode.UNKNOWN_FUNCTION: UnknownFunctionError,
    ErrorCode.FUNCTION_BUSY: FunctionBusyError,
    ErrorCode.FUNCTION_TIMEOUT: FunctionTimeoutError,
    ErrorCode.FUNCTION_FAILED: FunctionFailedError,
}


def error_for_code(code: int, message: str) -> ServerError:
    """Map an error code to the most specific :class:`ServerError` subclass."""
    if code in (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED):
        return AuthError(code, message)
    return _BY_CODE.get(code, ServerError)(code, message)
