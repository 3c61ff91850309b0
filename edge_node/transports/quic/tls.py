"""TLS material for the QUIC listener: load a certificate, or make a development one.

Browsers accept a self-signed certificate for WebTransport only through
``serverCertificateHashes``, and then only an ECDSA P-256 certificate valid for
at most 14 days; :func:`generate_self_signed` makes exactly that (13 days by
default) and :func:`cert_sha256` gives the hash the page passes to the browser.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["DEFAULT_HOSTS", "cert_sha256", "generate_self_signed", "san_names",
           "write_self_signed"]

#: Names a development certificate is valid for.
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")

#: Browsers refuse serverCertificateHashes for certificates valid longer than 14 days.
MAX_HASH_PIN_DAYS = 14


def san_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """subjectAltName entries for ``hosts``: IP addresses as IP entries, others as DNS."""
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def generate_self_signed(hosts: Sequence[str] = DEFAULT_HOSTS, days: float = 13.0
                         ) -> tuple[bytes, bytes]:
    """Return ``(certificate PEM, private key PEM)``: ECDSA P-256, self-signed.

    ``hosts`` become subjectAltNames (IP addresses as IP entries).  Raises
    ``ValueError`` for ``days`` outside (0, 14]: longer certificates cannot be
    pinned by hash in browsers.
    """
    if not 0 < days <= MAX_HASH_PIN_DAYS:
        raise ValueError(f"days must be in (0, {MAX_HASH_PIN_DAYS}] for hash pinning")
    if not hosts:
        raise ValueError("at least one host name is required")
    key = ec.generate_private_key(ec.SECP256R1())
    names = san_names(hosts)
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def write_self_signed(cert_path: str, key_path: str, hosts: Sequence[str] = DEFAULT_HOSTS,
                      days: float = 13.0) -> str:
    """Write a new development certificate and key (key mode 0600); return its hash."""
    cert, key = generate_self_signed(hosts, days)
    with open(cert_path, "wb") as f:
        f.write(cert)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return cert_sha256(cert)


def cert_sha256(cert_pem: bytes) -> str:
    """Hex SHA-256 of the certificate's DER bytes (what ``serverCertificateHashes`` wants)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()
