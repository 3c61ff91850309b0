"""Pick the nearest edge: measure the round trip to each candidate.

The probe is an HTTP ``GET /healthz`` on the edge's WebSocket port (the same
address the client will use), timed from connect to first response line.
An edge that refuses, times out or is draining (non-200) is ranked last.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from urllib.parse import urlsplit

__all__ = ["healthz", "probe_rtt", "rank_by_rtt"]


async def healthz(url: str, timeout: float = 1.0) -> tuple[int, float] | None:
    """``(HTTP status, round-trip seconds)`` of ``GET /healthz`` on the edge at ``url``
    (``ws://`` or ``http://``), or ``None`` when nothing answers within ``timeout``."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "http"):
        return None  # TLS probes are not implemented
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    writer = None
    try:
        async with asyncio.timeout(timeout):
            t0 = time.perf_counter()
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n"
                         "Connection: close\r\n\r\n".encode())
            line = await reader.readline()
            rtt = time.perf_counter() - t0
    except (OSError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    fields = line.split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/1.") or not fields[1].isdigit():
        return None
    return int(fields[1]), rtt


async def probe_rtt(url: str, timeout: float = 1.0, tries: int = 3) -> float | None:
    """Median RTT in seconds to the edge at ``url``; ``None`` if it does not answer 200."""
    samples = []
    for _ in range(tries):
        answer = await healthz(url, timeout)
        if answer is None or answer[0] != 200:
            return None
        samples.append(answer[1])
    return statistics.median(samples)


async def rank_by_rtt(urls: list[str], timeout: float = 1.0) -> list[tuple[str, float | None]]:
    """``urls`` ordered by measured RTT (unreachable last, configured order kept on ties)."""
    rtts = await asyncio.gather(*(probe_rtt(u, timeout) for u in urls))
    order = sorted(range(len(urls)), key=lambda i: (rtts[i] is None, rtts[i] or 0.0, i))
    return [(urls[i], rtts[i]) for i in order]
