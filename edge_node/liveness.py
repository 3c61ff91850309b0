"""Is another edge alive?  A quick probe, used to move a dead owner's rooms
without waiting for its leases to lapse.

The probe asks the edge's ``/healthz`` over plain HTTP with a short timeout.
A refused connection (process gone) or a timeout (frozen or cut off) counts
as dead; any HTTP answer (a draining edge says 503) as alive.  A false "dead"
(a partition between two edges that both still reach Redis) is safe: the stolen rooms' old owner is
fenced on its next append and becomes a mirror; messages it fanned out but
could not append are re-sent by their publishers' outboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

__all__ = ["probe_edge", "health_url"]


def health_url(ws_url: str) -> tuple[str, int]:
    """``ws://host:port`` -> ``(host, port)`` of its HTTP endpoint (same port)."""
    parts = urlsplit(ws_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    return host, port


async def probe_edge(ws_url: str, timeout: float = 0.3) -> bool:
    """True when the edge at ``ws_url`` answers ``/healthz`` within ``timeout``.

    Any HTTP answer counts as alive, a 503 too: a draining edge still owns its
    rooms until it hands them over.
    """
    host, port = health_url(ws_url)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                         .encode())
            status = await reader.readline()
            return status.startswith(b"HTTP/1.")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
