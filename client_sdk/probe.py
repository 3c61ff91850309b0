"""Pick the nearest edge: measure the round trip to each candidate.

One round trip per probe, for every scheme the SDK speaks:

- ``ws://`` and ``wss://`` (and ``http(s)://``): an HTTP ``GET /healthz`` on the
  edge's WebSocket port (the address the client will use), timed from the request
  to the first response line.  The TCP connect and, on ``wss://``, the TLS handshake
  before it are not timed (a handshake's CPU would swamp a loopback or LAN round
  trip; a proxy in the path answers the connect itself), so TLS and plain edges rank
  alike.  The edge's certificate is verified as the connection will verify it
  (``tls``): one that does not verify makes the edge unreachable.  A draining edge
  answers 503: not a candidate.
- ``quic://``: one UDP datagram in QUIC's long-header form carrying a version no
  server speaks (RFC 9000 §6, the ``0x?a?a?a?a`` pattern reserved for this), padded
  to 1,200 bytes as an Initial must be; the edge's QUIC stack answers at once with a
  Version Negotiation packet, statelessly: no handshake, no crypto, no state on the
  edge.

An edge that refuses or times out ranks last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from urllib.parse import urlsplit

from .transport import TlsOptions, client_context

__all__ = ["healthz", "quic_version_probe", "probe_once", "probe_rtt", "rank_by_rtt"]

#: A version of the reserved pattern 0x?a?a?a?a: no server speaks it (RFC 9000 §15).
_PROBE_VERSION = 0x1A2A3A4A

_SECURE = ("wss", "https")


async def healthz(url: str, timeout: float = 1.0, tls: TlsOptions | None = None
                  ) -> tuple[int, float] | None:
    """``(HTTP status, round-trip seconds)`` of ``GET /healthz`` on the edge at ``url``
    (``ws://``, ``wss://``, ``http://`` or ``https://``; timed from the request to the
    first response line), or ``None`` when nothing answers within ``timeout`` (or, with
    TLS, the certificate does not verify)."""
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
            reader, writer = await asyncio.open_connection(host, port)
            if secure:
                await writer.start_tls(client_context(tls or TlsOptions()),
                                       server_hostname=host)
            t1 = time.perf_counter()
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n"
                         "Connection: close\r\n\r\n".encode())
            line = await reader.readline()
            rtt = time.perf_counter() - t1
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


class _VersionProbe(asyncio.DatagramProtocol):
    def __init__(self, scid: bytes) -> None:
        self.scid = scid
        self.answer: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        # Version Negotiation: long header, version 0, then DCID = the probe's SCID.
        if (len(data) > 6 + len(self.scid) and data[0] & 0x80 and data[1:5] == b"\0\0\0\0"
                and data[6:6 + data[5]] == self.scid and not self.answer.done()):
            self.answer.set_result(time.perf_counter())

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable: nobody there
        if not self.answer.done():
            self.answer.set_exception(exc)


async def quic_version_probe(url: str, timeout: float = 1.0) -> float | None:
    """Round-trip seconds to the QUIC listener at ``quic://host:port`` (see the module
    docstring), or ``None`` when nothing answers within ``timeout``."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "quic" or not parts.hostname or not parts.port:
        return None
    dcid, scid = os.urandom(8), os.urandom(8)
    packet = (bytes([0xC0 | (dcid[0] & 0x0F)]) + _PROBE_VERSION.to_bytes(4, "big")
              + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid)
    packet += bytes(1200 - len(packet))
    loop = asyncio.get_running_loop()
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _VersionProbe(scid), remote_addr=(parts.hostname, parts.port))
            t0 = time.perf_counter()
            transport.sendto(packet)
            return await proto.answer - t0
    except (OSError, TimeoutError):
        return None
    finally:
        if transport is not None:
            transport.close()


async def probe_once(url: str, timeout: float = 1.0, tls: TlsOptions | None = None
                     ) -> float | None:
    """One round trip in seconds to the edge at ``url`` (any scheme the SDK speaks),
    or ``None`` when it is unreachable, draining or (TLS) untrusted."""
    if urlsplit(url).scheme.lower() == "quic":
        return await quic_version_probe(url, timeout)
    answer = await healthz(url, timeout, tls)
    return answer[1] if answer is not None and answer[0] == 200 else None


async def probe_rtt(url: str, timeout: float = 1.0, tries: int = 3,
                    tls: TlsOptions | None = None) -> float | None:
    """Median RTT in seconds to the edge at ``url`` over ``tries`` probes; ``None`` if
    one goes unanswered (or the edge is draining)."""
    samples = []
    for _ in range(tries):
        rtt = await probe_once(url, timeout, tls)
        if rtt is None:
            return None
        samples.append(rtt)
    return statistics.median(samples)


async def rank_by_rtt(urls: list[str], timeout: float = 1.0, tls: TlsOptions | None = None
                      ) -> list[tuple[str, float | None]]:
    """``urls`` ordered by measured RTT (unreachable last, configured order kept on ties)."""
    rtts = await asyncio.gather(*(probe_rtt(u, timeout, tls=tls) for u in urls))
    order = sorted(range(len(urls)), key=lambda i: (rtts[i] is None, rtts[i] or 0.0, i))
    return [(urls[i], rtts[i]) for i in order]
