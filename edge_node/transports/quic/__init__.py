"""QUIC transport of the edge: raw QUIC for native clients and WebTransport for
browsers on one UDP port, the same sessions as WebSocket (see docs/quic.md).

:class:`QuicListener` is what :class:`~edge_node.server.EdgeServer` starts when
``quic_port`` is set.  aioquic is imported only through this package.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from aioquic.asyncio.server import QuicServer

from client_sdk.protocol import PROTOCOL_VERSION
from client_sdk.transport import WEBTRANSPORT_PATH
from edge_node.transports.quic.listener import start_quic
from edge_node.transports.quic.page import render_page
from edge_node.transports.quic.reload import QuicCertReloader
from edge_node.transports.quic.tls import cert_sha256, generate_self_signed

if TYPE_CHECKING:
    from edge_node.server import EdgeServer

__all__ = ["QuicListener"]

log = logging.getLogger("edge_node.transports.quic")


class QuicListener:
    """The edge's UDP listener.  ``await start()``, later ``stop()``.

    After ``start``: ``port`` (the bound UDP port), ``url`` (what clients
    use), ``cert_hash`` (hex SHA-256 of the certificate, for browsers).
    """

    #: Paths served on the WebSocket/HTTP port.
    pages = ("/webtransport",)

    def __init__(self, edge: EdgeServer) -> None:
        self.edge = edge
        self.port = 0
        self.url = ""
        self.cert_hash = ""
        self._server: QuicServer | None = None
        self._page = b""
        #: Reloads ``--quic-cert`` when its files change (None: a development cert).
        self.reloader: QuicCertReloader | None = None

    async def start(self) -> None:
        """Load (or make) the certificate and listen; ``RuntimeError`` on a bad cert file."""
        s = self.edge.settings
        assert s.quic_port is not None
        if s.quic_cert:
            try:
                # Read once at start (two small files): blocking is fine here.
                cert = Path(s.quic_cert).read_bytes()  # noqa: ASYNC240
                key = Path(s.quic_key or s.quic_cert).read_bytes()  # noqa: ASYNC240
            except OSError as exc:
                raise RuntimeError(f"cannot read the QUIC certificate or key: {exc}") from exc
        else:
            cert, key = generate_self_signed()
        try:
            self.cert_hash = cert_sha256(cert)
        except ValueError as exc:
            raise RuntimeError(f"{s.quic_cert}: not a PEM certificate") from exc
        try:
            self._server, self.port = await start_quic(self.edge, s.host, s.quic_port, cert, key)
        except ValueError as exc:
            raise RuntimeError(f"QUIC key does not load: {exc}") from exc
        except OSError as exc:
            raise RuntimeError(f"cannot listen for QUIC on UDP {s.host}:{s.quic_port}: "
                               f"{exc.strerror or exc} (stop what uses that port or choose "
                               "another --quic-port)") from exc
        self.url = s.quic_public_url or f"quic://{s.host}:{self.port}"
        self._render(cert)
        if s.quic_cert:
            self.reloader = QuicCertReloader(
                s.quic_cert, s.quic_key or s.quic_cert, self._server._configuration,
                s.tls_reload_interval, (cert, key), on_load=self._render)
        log.info("quic listening", extra={"quic_port": self.port, "cert_sha256": self.cert_hash,
                                          "dev_cert": not s.quic_cert})

    def _render(self, cert_pem: bytes) -> None:
        """The browser page, pinned to ``cert_pem``'s hash."""
        self.cert_hash = cert_sha256(cert_pem)
        self._page = render_page(self.port, self.cert_hash, PROTOCOL_VERSION, WEBTRANSPORT_PATH)

    def poll(self, now: float) -> None:
        """The housekeeping tick: reload the certificate when its files changed."""
        if self.reloader is not None:
            self.reloader.poll(now)

    def stop(self) -> None:
        """Stop listening; connections still open are closed with it."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def page(self, path: str) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a page path."""
        return 200, "text/html; charset=utf-8", self._page
