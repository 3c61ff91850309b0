"""The QUIC listener's certificate is reloaded when its files change, without a restart
(edge_node/transports/quic/reload.py).

A real edge serves QUIC with development certificate A; the files are replaced by
certificate B: new QUIC clients that trust only B get in (and those trusting only A no
longer do), a client connected before keeps its connection, and the WebTransport page
pins B's hash.  A pair that does not belong together (B's certificate, another key) is
refused and B stays in use.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from client_sdk import ConnectError, connect
from client_sdk.transport import TlsOptions
from edge_node.local.launch import spawn_edge
from edge_node.transports.quic.tls import write_self_signed
from tests.helpers import SECRET, http_get
from tests.helpers import wait_until as _wait


async def _can_connect(url: str, ca: Path, tok: str) -> bool:
    try:
        c = await connect(url, tok, tls=TlsOptions(ca_file=str(ca)), reconnect=False,
                          connect_timeout=2.0, rtt_probe_interval=None)
    except ConnectError:
        return False
    await c.close()
    return True


async def test_a_changed_quic_certificate_is_used_by_new_handshakes(
        redis_url: str, tmp_path: Path, token) -> None:  # type: ignore[no-untyped-def]
    cert, key = tmp_path / "quic.pem", tmp_path / "quic.key"
    write_self_signed(str(cert), str(key))
    ca_a = tmp_path / "a.pem"
    shutil.copy(cert, ca_a)
    e = spawn_edge(redis_url=redis_url, secret=SECRET, edge_id="quic-reload",
                   extra_args=["--tls-reload-interval", "0.2"],
                   log_path=str(tmp_path / "edge.log"), quic=True, quic_cert=str(cert),
                   quic_key=str(key))
    try:
        first = await connect(e.quic_url, token("first"), tls=TlsOptions(ca_file=str(ca_a)))
        await first.join("qr1")
        assert await _can_connect(e.quic_url, ca_a, token("a1"))

        hash_b = write_self_signed(str(cert), str(key))  # the files now hold B
        ca_b = tmp_path / "b.pem"
        shutil.copy(cert, ca_b)
        deadline = time.monotonic() + 10
        while not await _can_connect(e.quic_url, ca_b, token("b1")):
            assert time.monotonic() < deadline, "certificate B never served"
        assert not await _can_connect(e.quic_url, ca_a, token("a2"))
        _status, _ctype, page = await http_get(e.http_url + "/webtransport")
        assert hash_b in page.decode()

        # The connection made before the change goes on.
        assert first.connected and first.reconnects == 0
        assert await first.publish("qr1", b"still here") is not None

        # A mismatched pair (a new certificate, B's key kept) is refused: B stays.
        other_cert = tmp_path / "c.pem"
        write_self_signed(str(other_cert), str(tmp_path / "c.key"))
        shutil.copy(other_cert, cert)
        await _wait(lambda: "quic certificate not reloaded" in
                    (tmp_path / "edge.log").read_text(), 5, "the refusal logged")
        assert await _can_connect(e.quic_url, ca_b, token("b2"))
        await first.close()
    finally:
        e.stop()


@pytest.mark.parametrize("bad", ["not a certificate", ""])
def test_load_pair_refuses_what_is_not_a_matching_pair(tmp_path: Path, bad: str) -> None:
    from edge_node.transports.quic.reload import load_pair

    a_cert, a_key = tmp_path / "a.pem", tmp_path / "a.key"
    b_cert, b_key = tmp_path / "b.pem", tmp_path / "b.key"
    write_self_signed(str(a_cert), str(a_key))
    write_self_signed(str(b_cert), str(b_key))
    leaf, chain, _key = load_pair(a_cert.read_bytes(), a_key.read_bytes())
    assert chain == [] and leaf.serial_number
    with pytest.raises(ValueError):
        load_pair(a_cert.read_bytes(), b_key.read_bytes())
    with pytest.raises(ValueError):
        load_pair(bad.encode(), a_key.read_bytes())
