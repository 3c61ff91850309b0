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

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

__all__ = ["QuicCertReloader", "load_pair"]

log = logging.getLogger("edge_node.transports.quic")


def load_pair(cert_pem: bytes, key_pem: bytes) -> tuple[x509.Certificate, list[x509.Certificate],
                                                       Any]:
    """``(leaf, chain, private key)`` from PEM bytes; ``ValueError`` when either does not
    parse or the key does not belong to the certificate."""
    certs = x509.load_pem_x509_certificates(cert_pem)
    key = load_pem_private_key(key_pem, password=None)
    if key.public_key().public_numbers() != certs[0].public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError("the private key does not belong to the certificate")
    return certs[0], certs[1:], key


class QuicCertReloader:
    """Keeps ``configuration``'s certificate in step with the files (see the module
    docstring).  ``on_load(cert_pem)`` runs after each reload (the page's hash)."""

    def __init__(self, cert: str, key: str, configuration: Any, interval: float,
                 seen: tuple[bytes, bytes],
                 on_load: Callable[[bytes], None] | None = None) -> None:
        self.cert, self.key = cert, key
        self.configuration = configuration
        self.interval = interval
        self.on_load = on_load
        #: Successful reloads.
        self.reloads = 0
        self._seen = seen
        self._due = 0.0

    def check(self) -> bool:
        """One look: True if a new certificate is now in use.  Never raises."""
        try:
            pair = (Path(self.cert).read_bytes(), Path(self.key).read_bytes())
        except OSError:
            return False  # mid-rename or briefly absent: look again next time
        if pair == self._seen:
            return False
        self._seen = pair
        try:
            leaf, chain, key = load_pair(*pair)
        except ValueError as exc:
            log.warning("quic certificate not reloaded, the previous one stays in use",
                        extra={"error": str(exc)})
            return False
        cfg = self.configuration
        cfg.certificate, cfg.certificate_chain, cfg.private_key = leaf, chain, key
        self.reloads += 1
        if self.on_load is not None:
            self.on_load(pair[0])
        log.info("quic certificate reloaded", extra={"serial": f"{leaf.serial_number:x}"})
        return True

    def poll(self, now: float) -> None:
        """Call often (monotonic ``now``): :meth:`check` once every ``interval`` s (never
        when it is 0)."""
        if self.interval > 0 and now >= self._due:
            self._due = now + self.interval
            self.check()
