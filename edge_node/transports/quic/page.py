"""The browser page the edge serves at ``/webtransport``: a WebTransport client in
one HTML file, ``static/webtransport.html`` (no build step, no dependency).

It reads ``token``, ``room`` and ``name`` (and ``version``, to try another
protocol version) from the query string, connects to
this edge's QUIC port with ``serverCertificateHashes`` (the page carries the
hash of the edge's certificate), says HELLO, joins the room and shows every
message.  A reliable message whose payload starts with ``ping:`` is answered
with a reliable ``pong:`` (on the stream) and an unreliable ``dgram:`` (as a
datagram), which is what the browser test checks.  The page's state is in
``document.title`` and ``#status`` (``joined``, ``closed CODE REASON`` from the
edge's close capsule, ``error ...``).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["render_page"]

_PAGE = (resources.files(__package__) / "static" / "webtransport.html").read_text("utf-8")


def render_page(quic_port: int, cert_hash: str, version: int, path: str) -> bytes:
    """The page, bound to this edge's QUIC port, certificate hash and protocol version."""
    return (_PAGE.replace("__QUIC_PORT__", str(int(quic_port)))
            .replace("__CERT_HASH__", cert_hash)
            .replace("__VERSION__", str(int(version)))
            .replace("__PATH__", path)).encode()
