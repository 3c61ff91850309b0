"""File-descriptor budget of an edge: how many client connections it can hold.

Every WebSocket client holds one descriptor; Redis pools, the listeners, the
uplink spool and logs need more.  An edge raises its soft ``RLIMIT_NOFILE`` to
the hard limit at start and, unless told otherwise, admits at most the limit
minus :data:`FD_RESERVE` sessions: past that a new client gets HTTP 503 with a
retry hint (and tries a neighbour) instead of the edge running out of
descriptors, where accepting fails and Redis connections cannot be opened.
"""

from __future__ import annotations

import resource

__all__ = ["FD_RESERVE", "default_max_connections", "raise_nofile_limit"]

#: Descriptors kept for everything that is not a client (Redis pools of 64,
#: listeners, spool, logs, QUIC's UDP socket, a margin for handshakes in flight).
FD_RESERVE = 256


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections(nofile: int) -> int:
    """Sessions an edge admits with ``nofile`` descriptors: the limit minus
    :data:`FD_RESERVE`, but never less than half the limit (nor than 1)."""
    return max(1, nofile - FD_RESERVE, nofile // 2)
