"""What every link of the SDK shares: the :class:`Link` interface, its errors, TLS options
and the transport constants (imported by :mod:`.ws` and :mod:`.quic`, re-exported by the
package)."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from ..errors import ConnectError

__all__ = ["QUIC_ALPN", "WEBTRANSPORT_PATH", "Link", "LinkClosed", "RefusedError", "TlsOptions",
           "TlsVerifyError", "client_context", "scheme_of"]

#: ALPN of the raw QUIC protocol (records on one bidirectional stream + datagrams).
QUIC_ALPN = "edge-relay/1"
#: Path of the WebTransport session (extended CONNECT) on an edge's QUIC port.
WEBTRANSPORT_PATH = "/edge-relay"


class LinkClosed(Exception):
    """The connection ended; ``code``/``reason`` are the edge's close code, if any."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed ({code} {reason})")
        self.code = code
        self.reason = reason


class RefusedError(ConnectError):
    """The edge refused the connection; ``retry_hint`` is the wait it asked for (s)."""

    def __init__(self, message: str, retry_hint: float = 0.0) -> None:
        super().__init__(message)
        self.retry_hint = retry_hint


class TlsVerifyError(ConnectError):
    """The edge's TLS certificate did not verify (unknown CA, wrong host name, expired):
    ``url`` is the edge, ``reason`` OpenSSL's one-line reason.  Not a network fault:
    retrying the same edge will not help until its certificate or the client's CA
    file changes."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: TLS certificate verify failed: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How QUIC and ``wss://`` links check the edge's certificate.

    The certificate and the host name are verified against ``ca_file`` (PEM),
    else the ``EDGE_RELAY_CA_FILE`` environment variable, else the system roots.
    ``context`` (``wss://`` only) is an :class:`ssl.SSLContext` used as it is, for
    anything else (client certificates, pinning, ciphers); QUIC has its own TLS
    stack and uses ``verify`` and ``ca_file`` only.  ``verify=False`` skips the
    check (development only: anyone on the path can then read and change the
    traffic).  A certificate that does not verify raises :class:`TlsVerifyError`.
    """

    verify: bool = True
    ca_file: str | None = None
    context: ssl.SSLContext | None = None

    def resolved_ca_file(self) -> str | None:
        """The CA file to use, after the environment default."""
        return self.ca_file or os.environ.get("EDGE_RELAY_CA_FILE") or None


#: Client contexts by (verify, CA file, its mtime): loading the system roots takes
#: ~20 ms, too much for every connect of a reconnect storm.
_CONTEXTS: dict[tuple[bool, str | None, int], ssl.SSLContext] = {}


def client_context(tls: TlsOptions) -> ssl.SSLContext:
    """The :class:`ssl.SSLContext` for a ``wss://`` connection (or an ``https://``
    probe) with ``tls``: ``tls.context`` if given, else a verifying context on the CA
    file or the system roots, shared while that file is unchanged; ``OSError`` /
    :class:`ssl.SSLError` when the CA file cannot be read or parsed."""
    if tls.context is not None:
        return tls.context
    ca = tls.resolved_ca_file() if tls.verify else None
    key = (tls.verify, ca, os.stat(ca).st_mtime_ns if ca else 0)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        if tls.verify:
            ctx = ssl.create_default_context(cafile=ca)
        else:  # no roots to load
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if len(_CONTEXTS) >= 16:
            _CONTEXTS.clear()
        _CONTEXTS[key] = ctx
    return ctx


class Link(Protocol):
    """One open connection to an edge."""

    url: str
    transport: str

    def send(self, data: bytes) -> None:
        """Queue one frame, reliable and ordered (never blocks; see ``buffered``)."""

    def send_unreliable(self, data: bytes) -> None:
        """Queue one frame that may be lost (a datagram when it fits)."""

    async def recv(self) -> bytes:
        """Next frame; raises :class:`LinkClosed` (or the transport's closed error)."""

    def messages(self) -> AsyncIterator[bytes | str]:
        """Frames until the edge closes (normally: the iterator ends; else it raises)."""

    @property
    def close_code(self) -> int | None:
        """The edge's close code once closed (None: lost without one)."""

    @property
    def close_reason(self) -> str:
        """The edge's close reason once closed."""

    def buffered(self) -> int:
        """Bytes queued for sending and not yet acknowledged/written."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` (1000 = done, the session ends)."""

    def abort(self) -> None:
        """Drop the connection without a close (as a network cut would)."""


def scheme_of(url: str) -> str:
    """The URL scheme, lower case (``ws``, ``wss``, ``quic``, ...)."""
    return urlsplit(url).scheme.lower()
