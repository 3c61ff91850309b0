"""Admission of new client connections, for every transport (WebSocket upgrade, raw
QUIC handshake, WebTransport CONNECT).

A connection is refused while the edge is closing (draining or stopping), while
``max_connections`` sessions are open, and over the connect rate (a token bucket
refilled at ``connect_rate`` tokens a second, holding at most ``connect_rate``).
Each refusal counts in ``edge_connects_rejected_total`` and comes with the seconds the
client should wait before it tries again (here or at a neighbour).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge_node.runtime.fd_limits import default_max_connections

if TYPE_CHECKING:
    from edge_node.runtime.metrics import EdgeStats

__all__ = ["Admission"]


class Admission:
    """The edge's gate for new connections.

    ``stats`` gives the sessions open now (``connections``) and counts refusals
    (``connects_rejected``); ``closing()`` is true once the edge drains or stops.
    ``max_connections`` 0 means: from the descriptor limit this process has now.
    """

    def __init__(self, stats: EdgeStats, connect_rate: float, max_connections: int,
                 closing: Callable[[], bool]) -> None:
        self.stats = stats
        self.connect_rate = connect_rate
        #: Sessions admitted at most (503 + retry hint past it).
        self.max_connections = max_connections or default_max_connections(
            resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        #: True while the edge drains or stops: no new sessions, ``/healthz`` is 503.
        self.closing = closing
        self._tokens = connect_rate
        self._last = time.monotonic()

    def admit(self) -> float:
        """0 to admit a new connection, else the seconds the client should wait."""
        if self.closing():
            self.stats.connects_rejected += 1
            return 1.0
        if self.stats.connections >= self.max_connections:
            self.stats.connects_rejected += 1
            return 1.0  # full: the client tries a neighbour, or here again in a second
        rate = self.connect_rate
        now = time.monotonic()
        self._tokens = min(rate, self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        self.stats.connects_rejected += 1
        return (1.0 - self._tokens) / rate
