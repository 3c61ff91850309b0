"""Pick the nearest edge: measure the round trip to each candidate.

The probe is an HTTP ``GET /healthz`` on the edge's WebSocket port (the same
address the client will use): the TCP connect plus the request up to the first
response line, two round trips.  On a ``wss://`` (or ``https://``) edge the TLS
handshake comes between the two and is not timed (its CPU would swamp a
loopback or LAN round trip), so TLS and plain edges rank alike; the edge's
certificate is verified as the connection will verify it (``tls``), and one that
does not verify ranks the edge as unreachable.  An edge that refuses, times out
or is draining (non-200) is ranked last.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from urllib.parse import urlsplit

from .transport import TlsOptions, client_context

__all__ = ["healthz", "probe_rtt", "rank_by_rtt"]

_SECURE = ("wss", "https")


async def healthz(url: str, timeout: float = 1.0, tls: TlsOptions | None = None
                  ) -> tuple[int, float] | None:
    """``(HTTP status, round-trip seconds)`` of ``GET /healthz`` on the edge at ``url``
    (``ws://``, ``wss://``, ``http://`` or ``https://``), or ``None`` when nothing
    answers within ``timeout`` (or, with TLS, the certificate does not verify)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "http", *_SECURE):
        return None
    secure = scheme in _SECURE
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            t0 = time.perf_counter()
            reader, writer = await asyncio.open_connection(host, port)
            elapsed = time.perf_counter() - t0
            if secure:
                await writer.start_tls(client_context(tls or TlsOptions()),
                                       server_hostname=host)
            t1 = time.perf_counter()
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n"
                         "Connection: close\r\n\r\n".encode())
            line = await reader.readline()
            rtt = elapsed + time.perf_counter() - t1
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
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


async def probe_rtt(url: str, timeout: float = 1.0, tries: int = 3,
                    tls: TlsOptions | None = None) -> float | None:
    """Median RTT in seconds to the edge at ``url``; ``None`` if it does not answer 200."""
    samples = []
    for _ in range(tries):
        answer = await healthz(url, timeout, tls)
        if answer is None or answer[0] != 200:
            return None
        samples.append(answer[1])
    return statistics.median(samples)


async def rank_by_rtt(urls: list[str], timeout: float = 1.0, tls: TlsOptions | None = None
                      ) -> list[tuple[str, float | None]]:
    """``urls`` ordered by measured RTT (unreachable last, configured order kept on ties)."""
    rtts = await asyncio.gather(*(probe_rtt(u, timeout, tls=tls) for u in urls))
    order = sorted(range(len(urls)), key=lambda i: (rtts[i] is None, rtts[i] or 0.0, i))
    return [(urls[i], rtts[i]) for i in order]
