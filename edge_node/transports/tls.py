"""TLS on the WebSocket port (``wss://``, and ``https://`` for ``/healthz``, ``/metrics``).

Which files (:func:`tls_files`), decided once from the settings:

- TLS is on when ``tls`` is set or a ``tls_cert`` is given (``--tls`` / ``--tls-cert``);
- the certificate is ``tls_cert``, else the QUIC one (``quic_cert``);
- the key is ``tls_key``, else the key that goes with that certificate: the
  ``tls_cert`` file itself when one was given (a PEM holding both), else
  ``quic_key``, else ``quic_cert`` (the QUIC listener's own rule);
- TLS on without any certificate file is a :class:`TlsConfigError` (a development
  certificate made at start would be trusted by no client: ``edge-relay cert``
  writes one you can hand to clients as their CA file).

:class:`CertReloader` owns the one :class:`ssl.SSLContext` the listener serves with.
Every ``interval`` seconds it reads the two files (a few KiB) and compares them with
what it last tried (contents, not mtimes: a rewrite within one kernel clock tick
keeps the mtime, and a Kubernetes secret update swaps a symlink); on a change it
checks the pair on a scratch context and only then loads exactly those bytes into
the live context (a certificate and key written one after the other never leave
the listener with a mismatched pair: loading a certificate whose key is not yet
there would drop the old key).  New handshakes then use the new certificate;
established connections keep theirs.  A pair that does not load is logged once (one
line) and the old one stays in use until the files change again.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography import x509
from prometheus_client import CollectorRegistry, Gauge

if TYPE_CHECKING:
    from edge_node.config import EdgeSettings

__all__ = ["CertReloader", "PairWatch", "TlsConfigError", "tls_files", "ws_tls"]

log = logging.getLogger("edge_node.transports.tls")


class TlsConfigError(ValueError):
    """TLS was asked for but its files are missing, unreadable or do not load."""


def tls_files(s: EdgeSettings) -> tuple[str, str] | None:
    """``(certificate, key)`` PEM paths for the WebSocket listener, or ``None`` when TLS
    is off (see the module docstring for the rule); :class:`TlsConfigError` when TLS is
    on without a certificate."""
    if not (s.tls or s.tls_cert):
        if s.tls_key:
            raise TlsConfigError("--tls-key needs --tls-cert (or --tls with --quic-cert)")
        return None
    if s.tls_cert:
        return s.tls_cert, s.tls_key or s.tls_cert
    if s.quic_cert:
        return s.quic_cert, s.tls_key or s.quic_key or s.quic_cert
    raise TlsConfigError("--tls needs a certificate: --tls-cert (and --tls-key), or "
                         "--quic-cert to share the QUIC one (`edge-relay cert` makes a "
                         "development pair)")


def _read(cert: str, key: str) -> tuple[bytes, bytes]:
    try:
        with open(cert, "rb") as f:
            cert_pem = f.read()
        with open(key, "rb") as f:
            return cert_pem, f.read()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the TLS certificate or key: {exc}") from exc


def server_context() -> ssl.SSLContext:
    """An empty server context with our settings: TLS 1.2 or later, ALPN ``http/1.1``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class PairWatch:
    """A certificate and key file pair looked at every ``interval`` seconds (see the
    module docstring): when their contents changed since the last attempt, the new
    bytes go to :meth:`apply`, which loads them or raises :class:`TlsConfigError` (the
    pair in use then stays).  ``what`` names the listener in the log lines."""

    what = "tls"

    def __init__(self, cert: str, key: str, interval: float,
                 seen: tuple[bytes, bytes] | None = None) -> None:
        self.cert, self.key, self.interval = cert, key, interval
        #: Successful loads after the first one.
        self.reloads = 0
        self._due = 0.0
        self._seen = seen if seen is not None else _read(cert, key)

    def apply(self, cert_pem: bytes, key_pem: bytes) -> str:
        """Load the pair; return its serial number (hex) for the log."""
        raise NotImplementedError

    def check(self) -> bool:
        """One look: reload if either file's content changed since the last attempt;
        True if a new certificate is now in use.  Never raises (a failure is logged
        once per change of the files)."""
        try:
            pair = _read(self.cert, self.key)
        except TlsConfigError:
            return False  # mid-rename or briefly absent: look again next time
        if pair == self._seen:
            return False
        self._seen = pair
        try:
            serial = self.apply(*pair)
        except TlsConfigError as exc:
            log.warning(f"{self.what} certificate not reloaded, the previous one stays in "
                        "use", extra={"error": str(exc)})
            return False
        self.reloads += 1
        log.info(f"{self.what} certificate reloaded", extra={"serial": serial})
        return True

    def poll(self, now: float) -> None:
        """Call often (the edge's housekeeping tick, monotonic ``now``): runs
        :meth:`check` once every ``interval`` seconds (never when it is 0)."""
        if self.interval > 0 and now >= self._due:
            self._due = now + self.interval
            self.check()


class CertReloader(PairWatch):
    """The listener's live :class:`ssl.SSLContext`, reloaded when its files change.

    Construct it (loads the pair or raises :class:`TlsConfigError`), pass ``context``
    to the listener, then call :meth:`poll` from a periodic task; :meth:`check` is one
    look at the files, callable directly (tests).  After each successful load
    ``on_load(not_after_unix_seconds)`` is called.
    """

    def __init__(self, cert: str, key: str, interval: float = 5.0,
                 on_load: Callable[[float], None] | None = None) -> None:
        super().__init__(cert, key, interval)
        self.on_load = on_load
        self.context = server_context()
        #: Serial number and expiry (unix seconds) of the certificate in use.
        self.serial = 0
        self.not_after = 0.0
        self.apply(*self._seen)

    def apply(self, cert_pem: bytes, key_pem: bytes) -> str:
        """Check the pair on a scratch context, then load it into the live one;
        :class:`TlsConfigError` (and the live context unchanged) when it fails."""
        try:
            leaf = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise TlsConfigError(f"{self.cert}: not a PEM certificate") from exc
        # load_cert_chain takes only paths: a private copy of exactly the bytes read.
        with tempfile.TemporaryDirectory(prefix="edge-tls-") as tmp:  # mode 0700
            c, k = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            for path, data in ((c, cert_pem), (k, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            try:
                server_context().load_cert_chain(c, k)
            except ssl.SSLError as exc:
                raise TlsConfigError(f"{self.cert} / {self.key} do not load as a "
                                     f"certificate and its key: {exc.reason or exc}") from exc
            self.context.load_cert_chain(c, k)  # checked above: cannot half-fail
        self.serial = leaf.serial_number
        self.not_after = leaf.not_valid_after_utc.timestamp()
        if self.on_load is not None:
            self.on_load(self.not_after)
        return f"{self.serial:x}"


def ws_tls(s: EdgeSettings, registry: CollectorRegistry | None = None) -> CertReloader | None:
    """The WebSocket listener's TLS for settings ``s`` (``None``: plain ``ws://``), its
    certificate's expiry exported as ``edge_tls_cert_expiry_timestamp_seconds`` on
    ``registry``; ``RuntimeError`` (one line) when the files do not load."""
    try:
        files = tls_files(s)
        if files is None:
            return None
        gauge = None if registry is None else Gauge(
            "edge_tls_cert_expiry_timestamp_seconds", "When the WebSocket port's TLS "
            "certificate expires (unix time)", registry=registry)
        tls = CertReloader(*files, interval=s.tls_reload_interval,
                           on_load=None if gauge is None else gauge.set)
    except TlsConfigError as exc:
        raise RuntimeError(str(exc)) from exc
    if s.public_url and not s.public_url.lower().startswith("wss://"):
        log.warning("the WebSocket port serves TLS but --public-url is not wss://",
                    extra={"public_url": s.public_url})
    log.info("tls on the websocket port", extra={"cert": files[0], "serial": f"{tls.serial:x}",
                                                 "not_after": int(tls.not_after)})
    return tls
