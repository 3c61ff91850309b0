"""Python SDK of the edge relay: connect, join rooms, publish, presence, RTT.

The wire contract lives in :mod:`client_sdk.protocol` (sans-I/O).  This
package never imports the edge, the origin or the benchmarks.
"""

from __future__ import annotations

from .backoff import Backoff, full_jitter
from .client import Client, Position, ReceivedMessage, connect
from .discovery import DiscoveryError, discover_edges
from .errors import (
    AuthError,
    ClientClosedError,
    ConnectError,
    ConnectionLostError,
    EdgeRelayError,
    ForbiddenError,
    FunctionBusyError,
    FunctionError,
    FunctionFailedError,
    FunctionTimeoutError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    UnknownFunctionError,
)
from .game import GameRoom
from .protocol import Member
from .subscription import PresenceEvent, RecoveryEvent, Subscription
from .transport import TlsOptions, TlsVerifyError

__all__ = [
    "AuthError",
    "Backoff",
    "Client",
    "ClientClosedError",
    "ConnectError",
    "ConnectionLostError",
    "DiscoveryError",
    "EdgeRelayError",
    "ForbiddenError",
    "FunctionBusyError",
    "FunctionError",
    "FunctionFailedError",
    "FunctionTimeoutError",
    "GameRoom",
    "Member",
    "Position",
    "PresenceEvent",
    "RateLimitedError",
    "RecoveryEvent",
    "ReceivedMessage",
    "RequestTimeoutError",
    "ServerError",
    "Subscription",
    "TlsOptions",
    "TlsVerifyError",
    "UnknownFunctionError",
    "connect",
    "discover_edges",
    "full_jitter",
]
