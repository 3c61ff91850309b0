"""QUIC specifics against real edges: datagrams (size guard, loss), TLS checks,
address change, fallback to WebSocket when UDP is blocked.

The rooms, presence, recovery and bad-input suites also run over QUIC
(``TRANSPORTS`` in those modules); this file covers what only QUIC has.  Loss
and address changes go through :class:`tests.lossy_udp.LossyUdpProxy`.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

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
