"""Sans-I/O parts of the QUIC transport: stream records, the QUIC send path
(datagram size guard, bounded stale-first queue), development certificates,
and ``edge-relay cert``."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.transport.records import RecordDecoder, RecordTooLarge, encode_record
from edge_node.local.launcher import main as cli_main
from edge_node.transports.outbound import Flusher
from edge_node.transports.quic.outbound import QuicOutbound
from edge_node.transports.quic.tls import cert_sha256, generate_self_signed

# -- records ---------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 50))
def test_records_survive_any_split(payloads: list[bytes], chunk: int) -> None:
    data = b"".join(encode_record(p) for p in payloads)
    dec = RecordDecoder(1000)
    out: list[bytes] = []
    for i in range(0, len(data), chunk):
        out += dec.feed(data[i:i + chunk])
    assert out == payloads
    assert dec.buffered == 0


def test_record_over_the_limit_is_refused_from_its_prefix() -> None:
    dec = RecordDecoder(10)
    assert dec.feed(encode_record(b"x" * 10)) == [b"x" * 10]
    with pytest.raises(RecordTooLarge) as info:
        dec.feed((11).to_bytes(4, "big"))  # refused before any payload arrives
    assert (info.value.size, info.value.limit) == (11, 10)


# -- QUIC send path ----------------------------------------------------------------


class FakeSink:
    """Records what the QUIC outbound writes, like the QUIC connection would."""

    def __init__(self) -> None:
        self.stream = bytearray()
        self.datagrams: list[bytes] = []
        self.transmits = 0
        self.unacked = 0

    def write(self, data: bytes) -> None:
        self.stream += data

    def get_write_buffer_size(self) -> int:
        return self.unacked

    def is_closing(self) -> bool:
        return False

    def send_datagram(self, data: bytes) -> bool:
        self.datagrams.append(data)
        return True

    def transmit(self) -> None:
        self.transmits += 1


def _outbound(sink: FakeSink, queue: int = 8, on_slow: list[int] | None = None) -> QuicOutbound:
    slow = on_slow if on_slow is not None else []
    return QuicOutbound(sink, Flusher(asyncio.get_running_loop()), limit=10_000,
                        soft_limit=5_000, on_slow=lambda: slow.append(1), max_datagram=100,
                        datagram_queue=queue)


async def test_unreliable_small_as_datagram_large_on_stream_reliable_as_record() -> None:
    sink = FakeSink()
    out = _outbound(sink)
    assert out.push(b"u" * 100, reliable=False)  # fits: datagram
    assert out.push(b"U" * 101, reliable=False)  # too big: stream
    assert out.push(b"r" * 10)  # reliable: stream
    await asyncio.sleep(0)  # the flusher runs once per loop tick
    assert sink.datagrams == [b"u" * 100]
    assert RecordDecoder(1000).feed(bytes(sink.stream)) == [b"U" * 101, b"r" * 10]
    assert sink.transmits == 1
    assert (out.datagrams_out, out.datagrams_dropped) == (1, 0)


async def test_datagram_queue_is_bounded_and_drops_the_stalest() -> None:
    sink = FakeSink()
    out = _outbound(sink, queue=8)
    for i in range(20):  # one tick: more updates than the queue holds
        out.push(b"%02d" % i, reliable=False)
    await asyncio.sleep(0)
    assert sink.datagrams == [b"%02d" % i for i in range(12, 20)], "newest kept, in order"
    assert out.datagrams_dropped == 12


async def test_slow_quic_client_is_closed_like_a_websocket_one() -> None:
    sink = FakeSink()
    slow: list[int] = []
    out = _outbound(sink, on_slow=slow)
    sink.unacked = 6_000  # over the soft limit: unreliable stream traffic is dropped
    assert not out.push(b"U" * 500, reliable=False)
    assert out.push(b"r" * 100)
    sink.unacked = 10_000  # over the hard limit: a reliable frame marks it slow
    assert not out.push(b"r" * 100)
    assert slow == [1] and out.closed


# -- certificates ------------------------------------------------------------------


def test_development_certificate_fits_browser_hash_pinning() -> None:
    cert_pem, key_pem = generate_self_signed(("localhost", "127.0.0.1"), days=13)
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    valid = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert valid < datetime.timedelta(days=14)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    der = cert.public_bytes(serialization.Encoding.DER)
    assert cert_sha256(cert_pem) == hashlib.sha256(der).hexdigest()
    with pytest.raises(ValueError):
        generate_self_signed(days=15)


def test_cli_cert_writes_files_and_prints_the_hash(tmp_path, capsys) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert cli_main(["cert", "--cert", str(cert), "--key", str(key)]) == 0
    out = capsys.readouterr().out
    assert f"sha256:      {cert_sha256(cert.read_bytes())}" in out
    assert key.stat().st_mode & 0o777 == 0o600


def test_cli_cert_user_errors_are_one_line(tmp_path, capsys) -> None:
    assert cli_main(["cert", "--days", "30", "--cert", str(tmp_path / "c.pem")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-relay: error: --days") and err.count("\n") == 1
    assert cli_main(["cert", "--cert", str(tmp_path / "no" / "dir" / "c.pem")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_cli_edge_rejects_a_bad_quic_port(capsys) -> None:
    assert cli_main(["edge", "--quic-port", "70000"]) == 2
    assert "--quic-port" in capsys.readouterr().err


def test_protocol_md_quic_examples() -> None:
    """The QUIC byte examples in docs/protocol.md section 1."""
    from client_sdk.protocol import Ping, Publish, encode

    assert encode_record(encode(Ping(1))).hex(" ") == "00 00 00 03 92 0d 01"
    assert encode(Publish(0, "lobby", b"xy", False, 0)).hex(" ") == \
        "96 06 00 a5 6c 6f 62 62 79 c4 02 78 79 c2 00"
