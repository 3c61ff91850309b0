"""Reloading the QUIC listener's certificate without a restart.

:class:`QuicCertReloader` looks at the ``--quic-cert`` / ``--quic-key`` files every
``interval`` seconds (``--tls-reload-interval``, the WebSocket port's setting) and
compares their contents with what it last tried.  On a change it checks the pair
(:func:`load_pair`: a certificate, a private key, and the key that goes with the
certificate) and only then puts it into the listener's live
:class:`~aioquic.quic.configuration.QuicConfiguration`, the object every new
connection is created from: new handshakes use the new certificate, established
connections keep theirs.  The browser page (``/webtransport``) is rendered again with
the new certificate's hash.  A pair that does not load is logged once and the old one
stays in use until the files change again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from edge_node.transports.tls import PairWatch, TlsConfigError

__all__ = ["QuicCertReloader", "load_pair"]

def load_pair(cert_pem: bytes, key_pem: bytes) -> tuple[x509.Certificate, list[x509.Certificate],
                                                       Any]:
    """``(leaf, chain, private key)`` from PEM bytes; ``ValueError`` when either does not
    parse or the key does not belong to the certificate."""
    certs = x509.load_pem_x509_certificates(cert_pem)
    key = load_pem_private_key(key_pem, password=None)
    if key.public_key().public_numbers() != certs[0].public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError("the private key does not belong to the certificate")
    return certs[0], certs[1:], key


class QuicCertReloader(PairWatch):
    """Keeps ``configuration``'s certificate in step with the files (see the module
    docstring).  ``on_load(cert_pem)`` runs after each reload (the page's hash)."""

    what = "quic"

    def __init__(self, cert: str, key: str, configuration: Any, interval: float,
                 seen: tuple[bytes, bytes],
                 on_load: Callable[[bytes], None] | None = None) -> None:
        super().__init__(cert, key, interval, seen)
        self.configuration = configuration
        self.on_load = on_load

    def apply(self, cert_pem: bytes, key_pem: bytes) -> str:
        """Check the pair, then put it into the live configuration."""
        try:
            leaf, chain, key = load_pair(cert_pem, key_pem)
        except ValueError as exc:
            raise TlsConfigError(str(exc)) from exc
        cfg = self.configuration
        cfg.certificate, cfg.certificate_chain, cfg.private_key = leaf, chain, key
        if self.on_load is not None:
            self.on_load(cert_pem)
        return f"{leaf.serial_number:x}"
