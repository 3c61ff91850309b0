"""QUIC specifics against real edges: datagrams (size guard, loss), TLS checks,
address change, fallback to WebSocket when UDP is blocked, the WebTransport
close capsule (seen by a bare aioquic HTTP/3 client).

The rooms, presence, recovery and bad-input suites also run over QUIC
(``TRANSPORTS`` in those modules); this file covers what only QUIC has.  Loss
and address changes go through :class:`tests.lossy_udp.LossyUdpProxy`.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from client_sdk import ConnectError, ReceivedMessage, connect
from client_sdk.transport import TlsOptions
from edge_node.transports.quic.tls import write_self_signed
from tests.helpers import uid, wait_until
from tests.lossy_udp import LossyUdpProxy

pytestmark = pytest.mark.parametrize("transport", ["quic"], indirect=True)

_N = struct.Struct("!I")


class Seen:
    """Messages of one room, split into reliable (positioned) and unreliable."""

    def __init__(self) -> None:
        self.reliable: list[bytes] = []
        self.unreliable: list[bytes] = []

    def __call__(self, m: ReceivedMessage) -> None:
        (self.reliable if m.seq else self.unreliable).append(m.payload)


async def test_oversize_updates_go_on_the_stream_and_datagrams_keep_flowing(
        edge, clients, token) -> None:
    room = uid("dg")
    pub = await clients(edge.url, token("pub"))
    sub = await clients(edge.url, token("sub"))
    seen = Seen()
    await sub.join(room, on_message=seen)
    await pub.join(room)
    assert pub.transport == sub.transport == "quic"
    big = b"B" * 5000  # far over one packet: aioquic would wedge on it as a datagram
    await pub.publish(room, b"s-first", reliable=False)
    await wait_until(lambda: b"s-first" in seen.unreliable, 5, "first small update")
    sent_before = pub._link.datagrams_sent  # type: ignore[union-attr]
    got_before = sub._link.datagrams_received  # type: ignore[union-attr]
    await pub.publish(room, big, reliable=False)
    for i in range(20):
        await pub.publish(room, b"s%d" % i, reliable=False)
    # Stream and datagrams are not ordered with each other: wait for both.
    await wait_until(lambda: b"s19" in seen.unreliable and big in seen.unreliable, 5,
                     "the oversize update (on the stream) and the small ones after it")
    small = [p for p in seen.unreliable if p.startswith(b"s") and p != b"s-first"]
    assert small == [b"s%d" % i for i in range(20)]
    # The big one went on the stream both ways; the small ones as datagrams.
    assert pub._link.datagrams_sent - sent_before == 20  # type: ignore[union-attr]
    assert sub._link.datagrams_received - got_before >= 20  # type: ignore[union-attr]
    assert await pub.publish(room, b"reliable-after") is not None
    await wait_until(lambda: b"reliable-after" in seen.reliable, 5, "reliable after")


async def test_under_loss_reliable_all_in_order_unreliable_newest_wins(
        edge, clients, token) -> None:
    room = uid("loss")
    proxy = await LossyUdpProxy("127.0.0.1", edge.quic_port, seed=7).start()
    try:
        sub = await clients(proxy.url, token("sub"))
        seen = Seen()
        await sub.join(room, on_message=seen)
        pub = await clients(edge.url, token("pub"))
        await pub.join(room)
        # A member without the proxy: what reaches it, the edge has sent to ``sub`` too.
        witness = Seen()
        await (await clients(edge.url, token("witness"))).join(room, on_message=witness)
        proxy.loss = 0.25  # both directions, after the handshake
        n = 200
        futs = []
        for i in range(n):
            futs.append(pub.publish_nowait(room, b"r" + _N.pack(i)))
            await pub.publish(room, b"u" + _N.pack(i), reliable=False)
            if i % 20 == 0:
                await asyncio.sleep(0.01)  # spread over a few hundred ms
        async with asyncio.timeout(30):
            await asyncio.gather(*futs)  # type: ignore[arg-type]
        final = b"u" + _N.pack(n)
        # Latest-value traffic: the sender keeps sending its newest state each tick.
        async with asyncio.timeout(15):
            while final not in seen.unreliable:
                await pub.publish(room, final, reliable=False)
                await asyncio.sleep(0.02)
        await wait_until(lambda: len(seen.reliable) >= n, 30, "every reliable message")
        assert seen.reliable == [b"r" + _N.pack(i) for i in range(n)], \
            "reliable messages arrive all, once, in order"
        counters = [_N.unpack(p[1:])[0] for p in seen.unreliable]
        assert counters == sorted(counters), "no stale update after a newer one"
        # Random loss alone cannot prove that updates are not retransmitted: under
        # congestion aioquic packs dozens of datagrams into one packet, so 201 updates
        # may ride in a dozen packets that all happen to pass.  A cut can: updates
        # sent into it are put on the wire (the window is open, nothing in flight)
        # and lost; a retransmitting path would deliver them after the restore.
        proxy.loss = 0.0
        await pub.publish(room, b"u" + _N.pack(n + 1), reliable=False)
        await wait_until(lambda: b"u" + _N.pack(n + 1) in seen.unreliable, 10, "a clean link")
        proxy.blackhole()
        cut = [b"u" + _N.pack(n + 2 + i) for i in range(20)]
        for p in cut:
            await pub.publish(room, p, reliable=False)
            await asyncio.sleep(0.01)
        # Restore only once the edge has sent the cut updates (a loaded edge lagging
        # behind this process would otherwise send them after the restore).
        await wait_until(lambda: cut[-1] in witness.unreliable, 10, "the edge sent the cut")
        proxy.restore()
        last = b"u" + _N.pack(n + 100)
        async with asyncio.timeout(15):
            while last not in seen.unreliable:
                await pub.publish(room, last, reliable=False)
                await asyncio.sleep(0.02)
        assert not set(cut) <= set(seen.unreliable), \
            "updates sent while the link was cut arrived: they were retransmitted"
        counters = [_N.unpack(p[1:])[0] for p in seen.unreliable]
        assert counters == sorted(counters), "no stale update after a newer one"
        assert proxy.dropped > 0
        assert sub.reconnects == 0 and sub.transport == "quic"
    finally:
        proxy.stop()


async def test_address_change_keeps_the_session(edge, clients, token) -> None:
    room = uid("nat")
    proxy = await LossyUdpProxy("127.0.0.1", edge.quic_port).start()
    try:
        sub = await clients(proxy.url, token("roamer"))
        seen = Seen()
        await sub.join(room, on_message=seen)
        sid = sub.session_id
        assert await sub.publish(room, b"before") is not None
        await proxy.rebind()  # the edge now sees the client from another port
        assert await sub.publish(room, b"after") is not None
        await sub.publish(room, b"dgram-after", reliable=False)
        await wait_until(lambda: b"after" in seen.reliable and b"dgram-after" in seen.unreliable,
                         10, "traffic after the address change")
        assert seen.reliable == [b"before", b"after"]
        assert (sub.session_id, sub.reconnects) == (sid, 0)
        assert proxy.rebinds == 1
    finally:
        proxy.stop()


async def test_falls_back_to_websocket_when_udp_is_blocked(edge_factory, token) -> None:
    proxy = await LossyUdpProxy("127.0.0.1", 1).start()
    # The edge advertises the proxy as its QUIC URL, so the client learns that
    # URL's WebSocket alternate from WELCOME.
    e = edge_factory(uid("fb"), "--quic-public-url", proxy.url)
    proxy.target = ("127.0.0.1", e.quic_port)
    room = uid("fb")
    c = await connect(proxy.url, token("mobile"), ping_interval=0.5, ping_timeout=0.5,
                      connect_timeout=1.0, backoff_base=0.05, backoff_cap=0.2)
    try:
        seen = Seen()
        await c.join(room, on_message=seen)
        sid = c.session_id
        assert c.transport == "quic" and c.server_info["ws_url"] == e.ws_url
        proxy.blackhole()  # UDP blocked from now on
        await wait_until(lambda: c.transport == "ws" and c.connected, 15,
                         "reconnect over WebSocket")
        assert c.session_id == sid, "the session resumed"
        assert c.url == e.ws_url
        assert await c.publish(room, b"over-ws") is not None
        await wait_until(lambda: b"over-ws" in seen.reliable, 5, "delivery over WebSocket")
    finally:
        await c.close()
        proxy.stop()


async def test_sdk_verifies_the_edge_certificate(edge, token, tmp_path) -> None:
    other_cert = str(tmp_path / "other.pem")
    write_self_signed(other_cert, str(tmp_path / "other-key.pem"))
    with pytest.raises(ConnectError) as info:
        await connect(edge.url, token("wary"), reconnect=False, connect_timeout=3,
                      tls=TlsOptions(ca_file=other_cert))
    assert "QUIC" in str(info.value)
    # Told not to verify (development only), the same edge is accepted.
    c = await connect(edge.url, token("trusting"), tls=TlsOptions(verify=False))
    try:
        assert c.transport == "quic" and await c.ping() > 0
    finally:
        await c.close()


async def test_silent_quic_connection_is_closed_after_the_handshake_timeout(edge) -> Any:
    from client_sdk.protocol import ErrorCode
    from client_sdk.transport import LinkClosed, open_link

    link = await open_link(edge.url, connect_timeout=5, ping_interval=None, ping_timeout=None)
    try:
        with pytest.raises(LinkClosed) as info:
            async with asyncio.timeout(10):
                await link.recv()
        assert info.value.code == ErrorCode.HANDSHAKE_TIMEOUT
    finally:
        await link.close()


async def test_finishing_the_stream_ends_session_and_connection(edge, clients, token) -> None:
    from client_sdk.protocol import PROTOCOL_VERSION, Hello, Welcome, decode, encode
    from client_sdk.transport import LinkClosed, open_link

    watcher = await clients(edge.url, token("watcher"))
    link = await open_link(edge.url, connect_timeout=5, ping_interval=None, ping_timeout=None)
    try:
        link.send(encode(Hello(PROTOCOL_VERSION, token("leaver"), "raw")))
        assert isinstance(decode(await link.recv()), Welcome)
        quic = link._quic  # type: ignore[attr-defined]
        quic.send_stream_data(link._stream_id, b"", end_stream=True)  # type: ignore[attr-defined]
        link._proto.transmit()  # type: ignore[attr-defined]
        with pytest.raises(LinkClosed) as info:
            async with asyncio.timeout(5):
                while True:
                    await link.recv()
        assert info.value.code == 1000, "the edge closed the idle connection itself"
    finally:
        await link.close()
    assert await watcher.ping() > 0  # the edge keeps serving others


class _WtClient(QuicConnectionProtocol):
    """A bare WebTransport-over-HTTP/3 client (aioquic) that records what arrives
    on the CONNECT stream as HTTP/3 DATA (``connect_data``) and its end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.session: int | None = None
        self.status = b""
        self.connect_data = b""
        self.connect_ended = asyncio.Event()
        self.answered = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and ev.stream_id == self.session:
                self.status = dict(ev.headers).get(b":status", b"")
                self.answered.set()
            elif isinstance(ev, DataReceived) and ev.stream_id == self.session:
                self.connect_data += ev.data
                if ev.stream_ended:
                    self.connect_ended.set()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    n = 1 << (data[pos] >> 6)
    return int.from_bytes(data[pos:pos + n], "big") & ((1 << (8 * n - 2)) - 1), pos + n


@pytest.mark.parametrize(("version", "bad_token", "code"), [
    (None, True, 4401), (99, False, 4405)], ids=["bad-token", "bad-version"])
async def test_webtransport_refusal_sends_the_close_capsule_as_http3_data(
        edge, token, version: int | None, bad_token: bool, code: int) -> None:
    """A refused HELLO over WebTransport ends the session with CLOSE_WEBTRANSPORT_SESSION
    (type 0x2843: 32-bit code, UTF-8 reason) as HTTP/3 DATA on the CONNECT stream,
    then FIN (what a browser's ``WebTransport.closed`` reports; test_quic_browser.py
    checks it in Chromium)."""
    import ssl

    from client_sdk.protocol import PROTOCOL_VERSION, Hello, encode
    from client_sdk.transport import WEBTRANSPORT_PATH
    from client_sdk.transport.records import encode_record

    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                            max_datagram_frame_size=65536, verify_mode=ssl.CERT_NONE)
    async with asyncio.timeout(10), quic_connect(
            "127.0.0.1", edge.quic_port, configuration=cfg,
            create_protocol=_WtClient) as client:
        assert isinstance(client, _WtClient)
        session = client._quic.get_next_available_stream_id()
        client.session = session
        client.h3.send_headers(session, [
            (b":method", b"CONNECT"), (b":scheme", b"https"), (b":protocol", b"webtransport"),
            (b":authority", f"127.0.0.1:{edge.quic_port}".encode()),
            (b":path", WEBTRANSPORT_PATH.encode())])
        client.transmit()
        await client.answered.wait()
        assert client.status == b"200"
        stream = client.h3.create_webtransport_stream(session)
        hello = Hello(version or PROTOCOL_VERSION, "not-a-token" if bad_token else token("wt"),
                      "raw-wt")
        client._quic.send_stream_data(stream, encode_record(encode(hello)))
        client.transmit()
        await client.connect_ended.wait()
    data = client.connect_data
    # A capsule written raw on the stream (not in a DATA frame) is skipped by
    # HTTP/3 parsers as an unknown frame type: nothing arrives here.
    assert data, "the CONNECT stream ended without a capsule in HTTP/3 DATA"
    ctype, pos = _varint(data, 0)
    length, pos = _varint(data, pos)
    assert ctype == 0x2843, f"no CLOSE_WEBTRANSPORT_SESSION capsule in {data!r}"
    assert len(data) == pos + length, "the capsule is all the CONNECT stream carries"
    assert int.from_bytes(data[pos:pos + 4], "big") == code
    assert data[pos + 4:].decode(), "the capsule carries the reason"
