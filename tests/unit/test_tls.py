"""TLS of the WebSocket port, without sockets: which files (flags, environment, the QUIC
default), the live context and its reload (handshakes over memory BIOs), the SDK's
client contexts and its typed verification error."""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from client_sdk.errors import ConnectError
from client_sdk.probe import healthz
from client_sdk.transport import TlsOptions, TlsVerifyError, client_context
from edge_node.cli import UserError, settings_from_args
from edge_node.config import EdgeSettings
from edge_node.local.launcher import build_parser
from edge_node.transports.quic.tls import write_self_signed
from edge_node.transports.tls import CertReloader, TlsConfigError, tls_files, ws_tls


def _settings(argv: list[str]) -> EdgeSettings:
    return settings_from_args(build_parser().parse_args(["edge", *argv]))


def _serial(cert: str) -> int:
    return x509.load_pem_x509_certificate(Path(cert).read_bytes()).serial_number


def handshake_serial(server: ssl.SSLContext, ca_file: str, host: str = "localhost") -> int:
    """Serial number of the certificate a client trusting ``ca_file`` gets from
    ``server`` (a whole TLS handshake over memory BIOs); ``ssl.SSLError`` if it fails."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = ssl.create_default_context(cafile=ca_file).wrap_bio(c_in, c_out, server_hostname=host)
    for _ in range(10):
        done = True
        for obj in (cli, srv):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                done = False
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done:
            der = cli.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der).serial_number
    raise AssertionError("the handshake did not finish")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str]:
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    write_self_signed(cert, key)
    return cert, key


# -- which files ------------------------------------------------------------------------

@pytest.mark.parametrize("fields, files", [
    ({}, None),
    ({"quic_cert": "q.pem", "quic_key": "qk.pem"}, None),  # QUIC alone: WebSocket stays plain
    ({"tls_cert": "t.pem"}, ("t.pem", "t.pem")),
    ({"tls_cert": "t.pem", "tls_key": "tk.pem", "quic_cert": "q.pem"}, ("t.pem", "tk.pem")),
    ({"tls": True, "quic_cert": "q.pem", "quic_key": "qk.pem"}, ("q.pem", "qk.pem")),
    ({"tls": True, "quic_cert": "q.pem"}, ("q.pem", "q.pem")),
    ({"tls": True, "quic_cert": "q.pem", "tls_key": "tk.pem"}, ("q.pem", "tk.pem")),
])
def test_which_files(fields: dict[str, object], files: tuple[str, str] | None) -> None:
    s = EdgeSettings(**fields)  # type: ignore[arg-type]
    assert tls_files(s) == files
    assert s.ws_scheme == ("ws" if files is None else "wss")
    assert s.advertised_url.startswith(f"{s.ws_scheme}://")


@pytest.mark.parametrize("fields, message", [
    ({"tls": True}, "--tls needs a certificate"),
    ({"tls_key": "k.pem"}, "--tls-key needs --tls-cert"),
])
def test_tls_without_a_certificate_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(TlsConfigError, match=re.escape(message)):
        tls_files(EdgeSettings(**fields))  # type: ignore[arg-type]


def test_flags_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TLS", "TLS_CERT", "TLS_KEY", "TLS_RELOAD_INTERVAL", "QUIC_CERT", "QUIC_KEY"):
        monkeypatch.delenv(f"EDGE_RELAY_{var}", raising=False)
    s = _settings(["--tls", "--quic-cert", "q.pem", "--quic-key", "qk.pem"])
    assert (s.tls, tls_files(s), s.advertised_url) == (True, ("q.pem", "qk.pem"),
                                                       "wss://127.0.0.1:8700")
    assert tls_files(_settings(["--tls-cert", "t.pem"])) == ("t.pem", "t.pem")
    assert _settings([]).tls_reload_interval == 5.0
    monkeypatch.setenv("EDGE_RELAY_TLS_CERT", "e.pem")
    monkeypatch.setenv("EDGE_RELAY_TLS_KEY", "ek.pem")
    monkeypatch.setenv("EDGE_RELAY_TLS_RELOAD_INTERVAL", "0")
    s = _settings([])
    assert (tls_files(s), s.tls_reload_interval) == (("e.pem", "ek.pem"), 0.0)
    monkeypatch.delenv("EDGE_RELAY_TLS_CERT")
    monkeypatch.delenv("EDGE_RELAY_TLS_KEY")
    monkeypatch.setenv("EDGE_RELAY_TLS", "1")
    with pytest.raises(UserError, match="--tls needs a certificate"):
        _settings([])
    with pytest.raises(UserError, match="--tls-reload-interval"):
        _settings(["--tls-cert", "t.pem", "--tls-reload-interval", "-1"])


# -- the live context and its reload ----------------------------------------------------

def test_the_context_serves_the_certificate(pair: tuple[str, str]) -> None:
    tls = CertReloader(*pair)
    assert tls.serial == _serial(pair[0]) == handshake_serial(tls.context, pair[0])
    assert tls.check() is False and tls.reloads == 0  # nothing changed


def test_a_new_pair_is_used_by_new_handshakes(pair: tuple[str, str]) -> None:
    registry = CollectorRegistry()
    tls = ws_tls(EdgeSettings(tls_cert=pair[0], tls_key=pair[1]), registry)
    assert tls is not None
    old = tls.serial
    write_self_signed(*pair)  # a renewal: same paths, new certificate and key
    new = _serial(pair[0])
    assert new != old
    tls.poll(1.0)
    assert (tls.reloads, tls.serial) == (1, new)
    assert handshake_serial(tls.context, pair[0]) == new
    with pytest.raises(ssl.SSLCertVerificationError):  # a client trusting someone else
        handshake_serial(tls.context, _write(Path(pair[0]).with_name("other.pem")))
    expiry = registry.get_sample_value("edge_tls_cert_expiry_timestamp_seconds")
    assert expiry == tls.not_after > 0
    tls.poll(2.0)  # within the interval: no look at the files
    assert tls.reloads == 1


def _write(path: Path) -> str:
    """A certificate no server here uses (as a client's only CA)."""
    write_self_signed(str(path), str(path.with_suffix(".key")))
    return str(path)


def test_a_half_written_pair_keeps_the_old_one(pair: tuple[str, str], tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    tls = CertReloader(*pair)
    old = tls.serial
    old_ca = str(tmp_path / "old-ca.pem")
    Path(old_ca).write_bytes(Path(pair[0]).read_bytes())
    fresh_cert, fresh_key = str(tmp_path / "n.pem"), str(tmp_path / "nk.pem")
    write_self_signed(fresh_cert, fresh_key)
    Path(pair[0]).write_bytes(Path(fresh_cert).read_bytes())  # the certificate first...
    with caplog.at_level(logging.WARNING, logger="edge_node.transports.tls"):
        assert tls.check() is False
        assert tls.check() is False  # the same files again: not logged twice
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "previous one stays" in warnings[0].getMessage()
    assert tls.serial == old == handshake_serial(tls.context, old_ca)
    Path(pair[1]).write_bytes(Path(fresh_key).read_bytes())  # ...then its key
    assert tls.check() is True
    assert handshake_serial(tls.context, fresh_cert) == _serial(fresh_cert)


def test_files_that_do_not_load_are_one_line_errors(pair: tuple[str, str],
                                                    tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    other_key = tmp_path / "other-key.pem"
    write_self_signed(str(tmp_path / "other.pem"), str(other_key))
    for cert, key, message in ((str(tmp_path / "missing.pem"), pair[1], "cannot read"),
                               (str(bad), pair[1], "not a PEM certificate"),
                               (pair[0], str(other_key), "do not load")):
        with pytest.raises(RuntimeError, match=message) as info:
            ws_tls(EdgeSettings(tls_cert=cert, tls_key=key))
        assert "\n" not in str(info.value)


# -- the SDK's side -----------------------------------------------------------------------

def test_client_contexts(pair: tuple[str, str]) -> None:
    mine = ssl.create_default_context()
    assert client_context(TlsOptions(context=mine)) is mine
    a = client_context(TlsOptions(ca_file=pair[0]))
    assert a is client_context(TlsOptions(ca_file=pair[0]))  # shared while the file stays
    assert a.verify_mode == ssl.CERT_REQUIRED and a.check_hostname
    off = client_context(TlsOptions(verify=False))
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_the_verification_error_is_typed_and_one_line() -> None:
    exc = TlsVerifyError("wss://edge:443", "self-signed certificate")
    assert isinstance(exc, ConnectError)
    assert str(exc) == "wss://edge:443: TLS certificate verify failed: self-signed certificate"


async def test_probe_schemes() -> None:
    assert await healthz("quic://127.0.0.1:1") is None
    # Nothing listens on port 1: unreachable, TLS or not.
    assert await healthz("wss://127.0.0.1:1", 0.5) is None
