"""WebSocket over TLS against real edge processes: a throw-away CA signs the edges'
certificates for 127.0.0.1/localhost.

- the SDK connects over ``wss://`` trusting that CA, publishes and receives, and the
  edge advertises ``wss://`` (WELCOME ``ws_url``, neighbour lists); ``/healthz`` and
  ``/metrics`` answer over HTTPS on the same port;
- without the CA (system roots) the SDK fails with :class:`TlsVerifyError`, one line;
- a plain ``ws://`` client (and plain HTTP) on the TLS port is refused, the edge logs
  nothing about it and goes on serving;
- the certificate files are replaced: new connections get the new certificate (its
  serial), a connection opened before goes on working.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from client_sdk import ConnectError, connect
from client_sdk.transport import TlsOptions, TlsVerifyError
from edge_node.local.launch import EdgeProcess, free_port
from edge_node.transports.quic.tls import san_names
from tests.helpers import PAIR, SECRET, Recorder, uid, wait_until

pytestmark = pytest.mark.timeout(90)


class Ca:
    """A throw-away certificate authority that issues server certificates."""

    def __init__(self, directory: Path, name: str = "edge-relay test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.path = str(directory / f"ca-{self.cert.serial_number:x}.pem")
        Path(self.path).write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cert_path: str, key_path: str,
              hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> int:
        """Write a server certificate for ``hosts`` and its key; return its serial."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = san_names(hosts)
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        # Write to a temporary name and rename, as certificate tools do.
        for path, data in ((key_path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption())),
                (cert_path, cert.public_bytes(serialization.Encoding.PEM))):
            Path(path + ".tmp").write_bytes(data)
            os.replace(path + ".tmp", path)
        return cert.serial_number


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Ca:
    return Ca(tmp_path_factory.mktemp("ca"))


def https_get(url: str, ca_file: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=ca_file)
    try:
        with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def tls_edges(redis_url: str, tmp_path: Path, ca: Ca) -> Iterator[Callable[..., EdgeProcess]]:
    """Start edges with ``--tls-cert``/``--tls-key`` issued by ``ca``; ``e.url`` is the
    ``wss://`` URL, ``e.cert``/``e.key`` the files.  All stopped after the test."""
    started: list[EdgeProcess] = []

    def make(edge_id: str, *extra: str) -> EdgeProcess:
        cert, key = str(tmp_path / f"{edge_id}.pem"), str(tmp_path / f"{edge_id}-key.pem")
        ca.issue(cert, key)
        port = free_port()
        log = str(tmp_path / f"{edge_id}.log")
        env = {**os.environ, "EDGE_RELAY_SECRET": SECRET.decode()}
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_node", "edge", "--host", "127.0.0.1",
                 "--port", str(port), "--edge-id", edge_id, "--redis-url", redis_url,
                 "--tls-cert", cert, "--tls-key", key, *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True)
        e = EdgeProcess(proc, edge_id, "127.0.0.1", port, log)
        started.append(e)
        e.url = e.ws_url = f"wss://127.0.0.1:{port}"
        e.http_url = f"https://127.0.0.1:{port}"
        e.cert, e.key = cert, key  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while True:
            assert e.alive(), Path(log).read_text()[-2000:]
            with contextlib.suppress(OSError):
                if https_get(e.http_url + "/healthz", ca.path)[0] == 200:
                    return e
            assert time.monotonic() < deadline, "TLS edge did not become healthy"
            time.sleep(0.05)

    yield make
    for e in started:
        e.stop()


async def peer_serial(url: str, ca_file: str) -> int:
    """Serial number of the certificate a new TLS connection to ``url`` gets."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    _r, w = await asyncio.open_connection(host, int(port),
                                          ssl=ssl.create_default_context(cafile=ca_file))
    try:
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        w.close()
        with contextlib.suppress(Exception):
            await w.wait_closed()


def log_problems(e: EdgeProcess) -> list[str]:
    assert e.log_path is not None
    return [line for line in Path(e.log_path).read_text().splitlines()
            if any(mark in line for mark in ("Traceback", '"exc":', '"level":"error"',
                                             '"level":"critical"', "ssl", "SSL"))]


async def test_sdk_over_wss(tls_edges: Any, ca: Ca, token: Any, clients: Any) -> None:
    a_edge, b_edge = tls_edges("wss-a"), tls_edges("wss-b")
    tls = TlsOptions(ca_file=ca.path)
    a = await clients(a_edge.url, token("wss-pub"), tls=tls)
    b = await clients(b_edge.url, token("wss-sub"), tls=tls)
    room = uid("wss")
    rec = Recorder()
    await b.join(room, on_message=rec)
    await a.join(room)
    for k in range(10):
        await a.publish(room, PAIR.pack(0, k))
    await wait_until(lambda: len(rec.seen) == 10, 10, "deliveries over wss")
    assert rec.seen == [(0, k) for k in range(10)]
    # The edges advertise wss:// (registry -> neighbour lists).
    await wait_until(lambda: b_edge.url in a.neighbours, 10, "a wss:// neighbour")
    assert all(u.startswith("wss://") for u in a.neighbours)
    status, body = await asyncio.to_thread(https_get, a_edge.http_url + "/healthz", ca.path)
    assert status == 200 and b'"status":"ok"' in body
    status, body = await asyncio.to_thread(https_get, a_edge.http_url + "/metrics", ca.path)
    assert status == 200 and b"edge_tls_cert_expiry_timestamp_seconds" in body
    # rank_by_rtt probes the edges over HTTPS with the same trust.
    c = await clients([b_edge.url, a_edge.url], token("wss-rtt"), tls=tls, select="rtt")
    assert c.url in (a_edge.url, b_edge.url)
    assert log_problems(a_edge) == [] and log_problems(b_edge) == []


async def test_an_untrusted_certificate_is_a_clear_error(
        tls_edges: Any, token: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    edge = tls_edges("wss-untrusted")
    monkeypatch.delenv("EDGE_RELAY_CA_FILE", raising=False)  # the system roots only
    with pytest.raises(TlsVerifyError) as info:
        await connect(edge.url, token("wss-x"), reconnect=False, connect_timeout=5)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(edge.url)
    assert "certificate verify failed" in msg
    # Another CA's file: the same typed error (the SDK never falls back to no check).
    other = Ca(tmp_path, "another CA")
    with pytest.raises(TlsVerifyError):
        await connect([edge.url, edge.url.replace("127.0.0.1", "localhost")], token("wss-y"),
                      reconnect=False, tls=TlsOptions(ca_file=other.path))


async def test_plain_clients_are_refused_and_the_edge_serves_on(
        tls_edges: Any, ca: Ca, token: Any, clients: Any) -> None:
    edge = tls_edges("wss-plain")
    plain = edge.url.replace("wss://", "ws://")
    for k in range(3):
        with pytest.raises(ConnectError, match="wss://"):
            await connect(plain, token(f"plain-{k}"), reconnect=False, connect_timeout=5)
    with pytest.raises((OSError, urllib.error.URLError)):
        await asyncio.to_thread(urllib.request.urlopen,
                                edge.http_url.replace("https", "http") + "/healthz", None, 5)
    c = await clients(edge.url, token("after-plain"), tls=TlsOptions(ca_file=ca.path))
    room = uid("after-plain")
    await c.join(room)
    await c.publish(room, b"still serving")
    assert edge.alive()
    assert log_problems(edge) == []


async def test_certificate_reload(tls_edges: Any, ca: Ca, token: Any, clients: Any) -> None:
    edge = tls_edges("wss-reload", "--tls-reload-interval", "0.2")
    tls = TlsOptions(ca_file=ca.path)
    first = await peer_serial(edge.url, ca.path)
    old = await clients(edge.url, token("reload-old"), tls=tls)
    room = uid("reload")
    rec = Recorder()
    await old.join(room, on_message=rec)
    renewed = ca.issue(edge.cert, edge.key)
    assert renewed != first
    deadline = time.monotonic() + 10
    while (seen := await peer_serial(edge.url, ca.path)) != renewed:
        assert seen == first
        assert time.monotonic() < deadline, "the edge did not load the new certificate"
        await asyncio.sleep(0.1)
    new = await clients(edge.url, token("reload-new"), tls=tls)
    await new.join(room)
    await new.publish(room, PAIR.pack(1, 1))  # to the connection opened before the reload
    await wait_until(lambda: rec.seen == [(1, 1)], 10, "delivery on the old connection")
    assert old.url == edge.url and old.reconnects == 0
    assert log_problems(edge) == []
