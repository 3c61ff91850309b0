"""Bad input against a real edge: each case gets a clear ERROR frame or close code,
and another client on the same edge keeps being served during and after it.

Raw cases speak the wire protocol directly (a :class:`RawConn`: a ``websockets``
client or an SDK QUIC link, plus ``client_sdk.protocol.encode``/``decode``) so
they can send bytes the SDK never would; the bystander and the SDK-level cases
use :func:`client_sdk.connect`.  After each case the edge must still answer
``/healthz`` and count the error codes in ``edge_errors_total``.

Every case runs over WebSocket and over QUIC.  WebSocket-only inputs are skipped
on QUIC, where they cannot be sent: text frames (QUIC records are bytes) and the
transport's own 1009 for a message over the WebSocket ``max_size`` (QUIC closes
with 4413 instead, checked here too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from client_sdk import (
    AuthError,
    Client,
    ConnectError,
    ForbiddenError,
    Position,
    RateLimitedError,
    ServerError,
    Subscription,
    connect,
)
from client_sdk.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Error,
    ErrorCode,
    Frame,
    Hello,
    Join,
    Joined,
    Limits,
    Message,
    Ping,
    Pong,
    Publish,
    decode,
    encode,
)
from client_sdk.transport import Link, LinkClosed, open_link
from client_sdk.transport.records import encode_record
from tests.helpers import eventually, http_get, uid

MAX_FRAME = 64 * 1024  # the edge's default max_frame_bytes
_INBOUND = Limits(max_frame_bytes=16 * 1024 * 1024, max_presence_list=100_000)
_pack = msgpack.Packer(use_bin_type=True).pack

#: Every edge test here runs over WebSocket and over QUIC (see tests/conftest.py).
TRANSPORTS = ("ws", "quic")
#: What a raw connection raises once the edge has closed it.
Closed = (ConnectionClosed, LinkClosed)


class RawConn:
    """A raw protocol connection over WebSocket or QUIC, with the same calls."""

    def __init__(self, ws: RawConn | None = None, link: Link | None = None) -> None:
        self.ws, self.link = ws, link

    async def send(self, data: bytes | str) -> None:
        if self.ws is not None:
            await self.ws.send(data)
            return
        assert self.link is not None and isinstance(data, bytes), "QUIC carries bytes only"
        if self.closed:
            raise LinkClosed(self.link.close_code, self.link.close_reason)
        self.link.send(data)
        await asyncio.sleep(0)  # let the link transmit, as ws.send does

    async def recv(self) -> bytes:
        if self.ws is not None:
            raw = await self.ws.recv()
            assert isinstance(raw, bytes), "the edge sent a text frame"
            return raw
        assert self.link is not None
        return await self.link.recv()

    @property
    def closed(self) -> bool:
        """True once the edge's close (frame or QUIC close) has arrived."""
        if self.ws is not None:
            return self.ws.protocol.close_rcvd is not None
        assert self.link is not None
        return self.link.close_code is not None

    @property
    def close_code(self) -> int | None:
        if self.ws is not None:
            rcvd = self.ws.protocol.close_rcvd
            return rcvd.code if rcvd else None
        assert self.link is not None
        return self.link.close_code

    @property
    def close_reason(self) -> str:
        if self.ws is not None:
            rcvd = self.ws.protocol.close_rcvd
            return rcvd.reason if rcvd else ""
        assert self.link is not None
        return self.link.close_reason

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        elif self.link is not None:
            await self.link.close()




# -- raw protocol helpers ----------------------------------------------------


_open_raw: list[RawConn] = []


async def raw_open(url: str) -> RawConn:
    """A connection to the edge with no protocol handshake yet (closed after the test)."""
    if url.startswith("quic://"):
        conn = RawConn(link=await open_link(url, connect_timeout=5, ping_interval=None,
                                            ping_timeout=None))
    else:
        conn = RawConn(ws=await ws_connect(url, compression=None, max_size=None,
                                           ping_interval=None, open_timeout=5, close_timeout=1,
                                           max_queue=None))
    _open_raw.append(conn)
    return conn


@pytest.fixture(autouse=True)
async def _close_raw_connections(edge_factory: Any) -> AsyncIterator[None]:
    """Close raw sockets before the edges stop (an edge waits on unanswered closes)."""
    yield
    while _open_raw:
        await _open_raw.pop().close()


async def recv_frame(ws: RawConn, timeout: float = 5.0) -> Frame:
    """Next frame other than a MESSAGE (raw sessions that joined get their own echoes)."""
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            f = decode(raw, _INBOUND)
            if not isinstance(f, Message):
                return f


async def raw_session(url: str, tok: str) -> RawConn:
    """A connection past HELLO/WELCOME."""
    ws = await raw_open(url)
    await ws.send(encode(Hello(PROTOCOL_VERSION, tok, "raw-test")))
    welcome = await recv_frame(ws)
    assert type(welcome).__name__ == "Welcome", welcome
    return ws


async def read_until_close(ws: RawConn, timeout: float = 5.0
                           ) -> tuple[list[Frame], int | None, str]:
    """Frames received until the edge's close frame, and its code and reason.

    Returns as soon as the close frame has arrived, without waiting for the TCP
    close: an edge that stopped reading (a flooder's unread frames) finishes the
    closing handshake only after its close timeout.
    """
    frames: list[Frame] = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.05)
            except TimeoutError:
                if ws.closed:
                    break
                continue
            except Closed:
                break
            frames.append(decode(raw, _INBOUND))
    return frames, ws.close_code, ws.close_reason


async def expect_close(ws: RawConn, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read (and drop) frames until the edge closes; return its close code and reason."""
    _, code, reason = await read_until_close(ws, timeout)
    return code, reason


async def expect_error(ws: RawConn, code: int, req_id: int = 0) -> Error:
    f = await recv_frame(ws)
    assert isinstance(f, Error), f"expected ERROR {code}, got {f!r}"
    assert (f.code, f.req_id) == (code, req_id), f
    assert f.message, "error frames carry a human-readable message"
    return f


async def assert_usable(ws: RawConn) -> None:
    """The raw connection still answers a protocol PING with the same stamp."""
    stamp = uuid.uuid4().int & 0xFFFFFFFF
    await ws.send(encode(Ping(stamp)))
    assert await recv_frame(ws) == Pong(stamp)


def publish_of_size(req_id: int, room: str, size: int) -> bytes:
    """An encoded reliable PUBLISH of exactly ``size`` bytes."""
    n = size - len(encode(Publish(req_id, room, b"", True, 0)))
    while n > 0:
        data = encode(Publish(req_id, room, b"p" * n, True, 0))
        if len(data) == size:
            return data
        n -= len(data) - size
    raise ValueError(f"no PUBLISH of {size} bytes")


async def raw_join(ws: RawConn, room: str, req_id: int = 1) -> None:
    await ws.send(encode(Join(req_id, room, 0)))
    f = await recv_frame(ws)
    assert isinstance(f, Joined) and (f.req_id, f.room) == (req_id, room), f


async def flood_publishes(ws: RawConn, room: str, n: int) -> int:
    """Send up to ``n`` reliable publishes back to back; stop once the edge closes."""
    sent = 0
    for i in range(n):
        if ws.closed:
            break
        try:
            await ws.send(encode(Publish(1000 + i, room, b"spam", True, 0)))
        except Closed:
            break
        sent += 1
    return sent


def kill_after_flood(edge: Any) -> None:
    """SIGKILL the edge instead of letting the fixture SIGTERM it.

    After closing a flooder with 4003 the edge stops reading that socket, so the
    flooder's close reply sits unread behind its unread publishes and the edge
    holds the connection until its 10 s WebSocket close timeout; a graceful stop
    meanwhile takes just as long (see test_sigterm_with_unresponsive_clients_exits_cleanly
    in test_edge_ops.py).  Killing keeps the suite fast.
    """
    edge.kill()


# -- HTTP helpers ------------------------------------------------------------




async def error_counts(edge: Any) -> dict[int, float]:
    status, _, body = await http_get(edge.http_url + "/metrics")
    assert status == 200
    out: dict[int, float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name == "edge_errors":
            for s in fam.samples:
                if s.name == "edge_errors_total":
                    out[int(s.labels["code"])] = s.value
    return out


async def assert_edge_healthy(edge: Any, codes: set[int]) -> None:
    """/healthz answers 200 "ok" and /metrics counted every code in ``codes``."""
    assert edge.alive(), "the edge process died"
    status, ctype, body = await http_get(edge.http_url + "/healthz")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body)["status"] == "ok"
    counts = await error_counts(edge)
    missing = {c for c in codes if counts.get(c, 0) < 1}
    assert not missing, f"edge_errors_total lacks codes {missing}: {counts}"


# -- the bystander -----------------------------------------------------------


class Bystander:
    """A well-behaved SDK client on the same edge; :meth:`check` proves it is served."""

    def __init__(self, client: Client, sub: Subscription, room: str) -> None:
        self.client, self.sub, self.room = client, sub, room
        self.checks = 0

    async def check(self) -> None:
        payload = uuid.uuid4().bytes
        pos = await self.client.publish(self.room, payload)
        assert pos is not None
        async with asyncio.timeout(5):
            while True:  # skip traffic of other room members (the flood case)
                m = await self.sub.get()
                if m.payload == payload:
                    break
        assert (m.epoch, m.seq, m.sender) == (pos.epoch, pos.seq, self.client.session_id)
        assert await self.client.ping() > 0
        assert self.client.connected and self.client.reconnects == 0
        self.checks += 1


ClientFactory = Callable[..., Awaitable[Client]]




@pytest.fixture
def bystander(clients: ClientFactory, token: Any) -> Callable[..., Awaitable[Bystander]]:
    async def make(edge: Any, room: str | None = None) -> Bystander:
        room = room or uid("calm")
        c = await clients(edge.url, token(uid("bystander")))
        b = Bystander(c, await c.join(room), room)
        await b.check()
        return b

    return make




# -- authentication ----------------------------------------------------------


async def test_bad_and_expired_tokens(edge, bystander, token) -> None:
    by = await bystander(edge)
    cases = [
        ("garbage", "not-a-token", ErrorCode.UNAUTHORIZED),
        ("three garbage parts", "a.b.c", ErrorCode.UNAUTHORIZED),
        ("wrong secret", token("mallory", secret=b"another-secret"), ErrorCode.UNAUTHORIZED),
        ("expired", token("late", ttl=-10), ErrorCode.TOKEN_EXPIRED),
    ]
    for what, tok, code in cases:
        ws = await raw_open(edge.url)
        await ws.send(encode(Hello(PROTOCOL_VERSION, tok, "raw")))
        got, reason = await expect_close(ws)
        assert got == code, f"{what}: close {got} {reason!r}"
        assert reason, f"{what}: the close reason explains the refusal"

        with pytest.raises(AuthError) as ei:
            await connect(edge.url, tok, connect_timeout=3)
        assert ei.value.code == code, what
        await by.check()
    await assert_edge_healthy(edge, {ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED})


# -- handshake violations ----------------------------------------------------


async def test_handshake_violations_close_the_connection(edge, bystander, token,
                                                         transport) -> None:
    by = await bystander(edge)
    good = token("raw")
    cases: list[tuple[str, bytes | str, int]] = [
        ("first frame is PING", encode(Ping(1)), ErrorCode.BAD_REQUEST),
        ("first frame is JOIN", encode(Join(1, "lobby", 0)), ErrorCode.BAD_REQUEST),
        ("first frame is text", "hello", ErrorCode.BAD_REQUEST),
        ("first frame is not msgpack", b"\xc1\xc1\xc1", ErrorCode.BAD_REQUEST),
        ("HELLO without token", _pack([1, PROTOCOL_VERSION]), ErrorCode.BAD_REQUEST),
        ("wrong protocol version", encode(Hello(PROTOCOL_VERSION + 98, good)),
         ErrorCode.UNSUPPORTED_VERSION),
        ("first frame of unknown type", _pack([99, 7]), ErrorCode.UNKNOWN_TYPE),
    ]
    for what, data, code in cases:
        if isinstance(data, str) and transport != "ws":
            continue  # text frames exist only on WebSocket
        ws = await raw_open(edge.url)
        await ws.send(data)
        got, reason = await expect_close(ws)
        assert got == code, f"{what}: close {got} {reason!r}"
        await by.check()
    await assert_edge_healthy(edge, {ErrorCode.BAD_REQUEST, ErrorCode.UNSUPPORTED_VERSION,
                                     ErrorCode.UNKNOWN_TYPE})


@pytest.mark.slow
async def test_no_hello_within_handshake_timeout(edge, bystander) -> None:
    """No CLI flag sets the handshake timeout, so this waits for the 5 s default."""
    by = await bystander(edge)
    ws = await raw_open(edge.url)  # upgraded, then silent
    waiting = asyncio.create_task(expect_close(ws, timeout=10))
    while not waiting.done():  # the edge keeps serving others meanwhile
        await by.check()
        await asyncio.sleep(0.25)
    code, reason = await waiting
    assert code == ErrorCode.HANDSHAKE_TIMEOUT, (code, reason)
    assert by.checks > 2
    await by.check()
    await assert_edge_healthy(edge, {ErrorCode.HANDSHAKE_TIMEOUT})


# -- frames after the handshake ----------------------------------------------


async def test_a_message_trickled_forever_is_closed_with_4008(edge_factory, bystander, token,
                                                              transport) -> None:
    """One fragment (WebSocket) or one byte of a record (QUIC) every 0.3 s keeps the
    connection busy but never completes a message: closed with 4008 once it has taken
    longer than --message-timeout; a client sending at the same pace but completing its
    messages, and a bystander, are served throughout."""
    edge = edge_factory(uid("trk"), "--message-timeout", "1.5")
    by = await bystander(edge)
    steady = await raw_session(edge.url, token(uid("steady")))
    ws = await raw_session(edge.url, token(uid("trickler")))
    frame = encode(Ping(7))

    async def trickle() -> None:
        if ws.ws is not None:
            async def pieces() -> AsyncIterator[bytes]:
                for _ in range(60):  # 18 s at most: the edge closes it long before
                    yield frame[:1]
                    await asyncio.sleep(0.3)
            with contextlib.suppress(*Closed):
                await ws.ws.send(pieces())
            return
        link = ws.link
        assert link is not None
        record = encode_record(frame * 40)
        for i in range(60):  # bytes of one record, never all of them
            link._quic.send_stream_data(link._stream_id, record[i:i + 1])  # type: ignore[attr-defined]
            link._schedule()  # type: ignore[attr-defined]
            await asyncio.sleep(0.3)

    sender = asyncio.create_task(trickle())
    try:
        waiting = asyncio.create_task(expect_close(ws, timeout=8))
        n = 0
        while not waiting.done():
            n += 1
            await steady.send(encode(Ping(n)))  # complete messages at a trickle's pace
            assert isinstance(await recv_frame(steady), Pong)
            await by.check()
            await asyncio.sleep(0.3)
        code, reason = await waiting
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert code == ErrorCode.MESSAGE_TIMEOUT and "1.5 s" in reason, (code, reason)
    assert n >= 5 and not steady.closed
    await assert_edge_healthy(edge, {ErrorCode.MESSAGE_TIMEOUT})


async def test_message_timeout_must_be_positive(edge_factory) -> None:
    with pytest.raises(RuntimeError, match="--message-timeout"):
        edge_factory(uid("trk0"), "--message-timeout", "0")


async def test_oversize_frames(edge, bystander, token, transport) -> None:
    room = uid("big")
    by = await bystander(edge, room)  # same room: must not see the rejected payload
    ws = await raw_session(edge.url, token("big-sender"))
    await raw_join(ws, room)

    # Exactly max_frame_bytes is still accepted.
    fits = publish_of_size(2, room, MAX_FRAME)
    await ws.send(fits)
    ack = await recv_frame(ws)
    assert isinstance(ack, Ack) and ack.req_id == 2
    m = await by.sub.get(5)
    assert (len(m.payload), m.seq) == (len(decode(fits).payload), ack.seq)  # type: ignore[union-attr]

    # One byte more than the limit, still within the WebSocket max_size: ERROR 4413.
    too_big = publish_of_size(3, room, MAX_FRAME + 1)
    await ws.send(too_big)
    await expect_error(ws, ErrorCode.FRAME_TOO_LARGE)
    await assert_usable(ws)
    await ws.send(encode(Publish(4, room, b"small", True, 0)))
    ack = await recv_frame(ws)
    assert isinstance(ack, Ack) and ack.req_id == 4
    await by.check()  # skips "small"; never saw the oversize payload
    assert by.sub.dropped == 0

    # Far above the limit: WebSocket itself closes with 1009 (over max_size);
    # QUIC closes with 4413 as soon as the record's length prefix arrives.
    await ws.send(b"\x00" * (4 * MAX_FRAME))
    code, _ = await expect_close(ws)
    assert code == (1009 if transport == "ws" else ErrorCode.FRAME_TOO_LARGE)
    await by.check()
    await assert_edge_healthy(edge, {ErrorCode.FRAME_TOO_LARGE})


async def test_malformed_frames_get_4400_and_connection_stays(edge, bystander,
                                                              token, transport) -> None:
    room = uid("malformed")
    by = await bystander(edge, room)
    ws = await raw_session(edge.url, token("sloppy"))
    await raw_join(ws, room)
    bad: list[tuple[str, bytes | str]] = [
        ("not msgpack", b"\xc1\xc1garbage"),
        ("truncated msgpack", _pack([6, 1, room, b"payload", True, 0])[:-3]),
        ("trailing bytes", _pack([13, 1]) + b"\x00"),
        ("map, not array", _pack({"type": 6, "room": room})),
        ("string, not array", _pack("publish")),
        ("integer, not array", _pack(6)),
        ("empty array", _pack([])),
        ("type is a string", _pack(["6", 1, room, b"x", True, 0])),
        ("req_id is a string", _pack([3, "one", room, 0])),
        ("req_id negative", _pack([3, -1, room, 0])),
        ("room is an integer", _pack([3, 5, 42, 0])),
        ("room is empty", _pack([3, 5, "", 0])),
        ("room name too long", _pack([3, 5, "r" * 200, 0])),
        ("payload is text", _pack([6, 6, room, "text, not bytes", True, 0])),
        ("reliable is not a bool", _pack([6, 7, room, b"x", "yes", 0])),
        ("JOIN missing the room", _pack([3, 8])),
        ("PING stamp negative", _pack([13, -1])),
        ("a text frame", "{\"type\": \"publish\"}"),
        ("a server-only frame (MESSAGE)", encode(Message(room, 1, 1, "me", b"spoof"))),
        ("a server-only frame (ACK)", encode(Ack(9, 1, 1))),
    ]
    for what, data in bad:
        if isinstance(data, str) and transport != "ws":
            continue  # text frames exist only on WebSocket
        await ws.send(data)
        f = await recv_frame(ws)
        assert isinstance(f, Error) and f.code == ErrorCode.BAD_REQUEST, f"{what}: {f!r}"
        await assert_usable(ws)
    # The same connection still joins and publishes normally.
    await ws.send(encode(Publish(20, room, b"still-here", True, 0)))
    ack = await recv_frame(ws)
    assert isinstance(ack, Ack) and ack.req_id == 20
    m = await by.sub.get(5)
    assert (m.payload, m.seq) == (b"still-here", ack.seq), "a malformed frame was fanned out"
    await by.check()
    await assert_edge_healthy(edge, {ErrorCode.BAD_REQUEST})


async def test_unknown_message_type_gets_4406_with_req_id(edge, bystander, token) -> None:
    by = await bystander(edge)
    ws = await raw_session(edge.url, token("future-client"))
    for data, req_id in ((_pack([99, 7]), 7), (_pack([99]), 0), (_pack([200, 12, "x", b"y"]), 12),
                         (_pack([99, "not-an-id"]), 0), (_pack([-3, 4]), 4)):
        await ws.send(data)
        err = await expect_error(ws, ErrorCode.UNKNOWN_TYPE, req_id)
        assert "type" in err.message
        await assert_usable(ws)
    await by.check()
    await assert_edge_healthy(edge, {ErrorCode.UNKNOWN_TYPE})


async def test_malformed_request_error_echoes_req_id(edge, token) -> None:
    ws = await raw_session(edge.url, token("long-names"))
    await ws.send(_pack([3, 5, "r" * 200, 0]))  # JOIN req 5 with a room name over 128 bytes
    err = await recv_frame(ws)
    assert isinstance(err, Error) and err.code == ErrorCode.BAD_REQUEST
    assert err.req_id == 5


# -- authorization and request errors -----------------------------------------


async def test_forbidden_rooms_and_not_joined(edge, clients, bystander, token) -> None:
    by = await bystander(edge)
    c = await clients(edge.url, token("lobbyist", rooms=["lobby-*"]))
    with pytest.raises(ForbiddenError) as ei:
        await c.join("secret")
    assert ei.value.code == ErrorCode.FORBIDDEN
    assert c.subscription("secret") is None
    with pytest.raises(ForbiddenError):
        await c.presence("secret")
    with pytest.raises(ForbiddenError):
        await c.publish("secret", b"x")

    lobby = uid("lobby")
    sub = await c.join(lobby)
    with pytest.raises(ServerError) as ei:
        await c.publish(uid("lobby"), b"x")  # allowed by the token, but not joined
    assert ei.value.code == ErrorCode.NOT_JOINED and not isinstance(ei.value, ForbiddenError)
    with pytest.raises(ServerError) as ei:
        await c.leave(uid("lobby"))
    assert ei.value.code == ErrorCode.NOT_JOINED
    # After all these refusals the connection is intact.
    pos = await c.publish(lobby, b"ok")
    assert pos is not None and (await sub.get(5)).payload == b"ok"

    # A token may join more rooms than it may publish to.
    reader = await clients(edge.url, token("reader", rooms=["lobby-*"], publish=["lobby-chat"]))
    await reader.join(lobby)
    with pytest.raises(ForbiddenError):
        await reader.publish(lobby, b"nope")
    await c.publish(lobby, b"marker")
    assert (await sub.get(5)).payload == b"marker", "a forbidden publish was delivered"
    chat = "lobby-chat"
    await reader.join(chat)
    assert await reader.publish(chat, b"hello") is not None
    assert reader.connected and c.connected
    await by.check()
    await assert_edge_healthy(edge, {ErrorCode.FORBIDDEN, ErrorCode.NOT_JOINED})


async def test_too_many_rooms(edge_factory, clients, token) -> None:
    edge = edge_factory(uid("rooms2"), "--max-rooms", "2")
    c = await clients(edge.url, token("collector"))
    assert c.server_info["max_rooms"] == 2
    r1, r2, r3 = uid("one"), uid("two"), uid("three")
    await c.join(r1)
    await c.join(r2)
    with pytest.raises(ServerError) as ei:
        await c.join(r3)
    assert ei.value.code == ErrorCode.TOO_MANY_ROOMS
    await c.join(r2)  # re-joining a joined room does not count twice
    await c.leave(r1)
    sub3 = await c.join(r3)
    pos = await c.publish(r3, b"fits now")
    assert pos is not None and (await sub3.get(5)).payload == b"fits now"
    await assert_edge_healthy(edge, {ErrorCode.TOO_MANY_ROOMS})


@pytest.mark.parametrize("n_rooms", [65, 500])
async def test_resume_with_too_many_rooms_is_closed_with_4407(edge, token, n_rooms) -> None:
    """docs/protocol.md: a HELLO resume map over max_rooms_per_connection (64) closes
    with 4407, however many rooms it lists (not 4400 from the decoder)."""
    ws = await raw_open(edge.url)
    rooms = {f"room-{i}": [0, 1, 0] for i in range(n_rooms)}
    await ws.send(_pack([1, PROTOCOL_VERSION, token("many"), "raw-test",
                         {"sid": "s", "rt": "r", "att": 0, "rooms": rooms}]))
    code, reason = await expect_close(ws)
    assert code == ErrorCode.TOO_MANY_ROOMS, (code, reason)
    await assert_edge_healthy(edge, {ErrorCode.TOO_MANY_ROOMS})


# -- floods ------------------------------------------------------------------


async def test_connection_flood_past_max_connections_is_refused(edge_factory, clients,
                                                               token) -> None:
    """Past --max-connections a new client is refused with a retry hint; the clients
    already in are served as before, and a freed place can be taken again."""
    edge = edge_factory(uid("full"), "--max-connections", "3")
    room = uid("room")
    inside = [await clients(edge.url, token(f"in-{i}"), reconnect=False) for i in range(3)]
    subs = [await c.join(room) for c in inside]
    for i in range(5):
        with pytest.raises(ConnectError):
            await connect(edge.url, token(f"out-{i}"), reconnect=False, connect_timeout=2.0)
    await inside[0].publish(room, b"still served")
    for sub in subs:
        assert (await sub.get(5)).payload == b"still served"
    await inside[2].close()

    async def place_again() -> bool:
        try:
            c = await clients(edge.url, token("late"), reconnect=False, connect_timeout=2.0)
        except ConnectError:
            return False
        return c.connected

    await eventually(place_again, timeout=10, what="a freed place to be taken")
    _, _, metrics = await http_get(edge.http_url + "/metrics")
    rejected = sum(s.value for fam in text_string_to_metric_families(metrics.decode())
                   if fam.name == "edge_connects_rejected" for s in fam.samples
                   if s.name.endswith("_total"))
    assert rejected >= 5
    body = json.loads((await http_get(edge.http_url + "/healthz"))[2])
    assert body["max_connections"] == 3 and body["connections"] == 3


async def test_publish_flood_is_limited_and_others_are_served(edge_factory, bystander,
                                                              token) -> None:
    edge = edge_factory(uid("flood"), "--rate", "100", "--burst", "100")
    room = uid("flooded")
    by = await bystander(edge, room)  # same room: it also receives what gets through
    ws = await raw_session(edge.url, token("flooder"))
    await raw_join(ws, room)

    async def flood() -> int:
        return await flood_publishes(ws, room, 3000)

    async def keep_checking() -> None:
        for _ in range(5):
            await by.check()

    reader = asyncio.create_task(read_until_close(ws, timeout=10))
    sent, _ = await asyncio.gather(flood(), keep_checking())
    frames, close_code, reason = await reader

    acks = [f for f in frames if isinstance(f, Ack)]
    limited = [f for f in frames if isinstance(f, Error) and f.code == ErrorCode.RATE_LIMITED]
    # It joined the room too: it gets its own accepted publishes and (when the
    # flood lasts long enough, as it may over QUIC) the bystander's checks.
    msgs = [f for f in frames if isinstance(f, Message)]
    echoes = [m for m in msgs if m.sender != by.client.session_id]
    others = [f for f in frames if not isinstance(f, (Ack, Error, Message))]
    assert sent > 200
    assert echoes, "the first publishes (within the burst) are accepted and fanned out"
    assert len(echoes) < sent and len(acks) < sent, "the flood was not limited"
    assert limited, "the flooder is told it is rate limited (ERROR 4003)"
    assert all(f.message for f in limited)
    assert all(m.payload == b"spam" for m in echoes)
    assert not others, others
    assert close_code == ErrorCode.RATE_LIMITED, (close_code, reason)
    await by.check()
    await assert_edge_healthy(edge, {ErrorCode.RATE_LIMITED})
    kill_after_flood(edge)


async def test_ping_flood_is_told_it_is_rate_limited_before_the_close(edge_factory,
                                                                     token) -> None:
    """docs/protocol.md section 7: ERROR 4003 (req_id 0) while frames are dropped, even
    when the dropped frames carry no request id (PING); the close comes only after."""
    edge = edge_factory(uid("pingflood"), "--rate", "100", "--burst", "100")
    ws = await raw_session(edge.url, token("pinger"))
    reader = asyncio.create_task(read_until_close(ws, timeout=10))
    sent = 0
    for i in range(3000):
        if ws.closed:
            break
        try:
            await ws.send(encode(Ping(i + 1)))
        except Closed:
            break
        sent += 1
    frames, close_code, reason = await reader
    pongs = [f for f in frames if isinstance(f, Pong)]
    limited = [f for f in frames if isinstance(f, Error) and f.code == ErrorCode.RATE_LIMITED]
    assert pongs and len(pongs) < sent, "the burst is answered, the flood is not"
    assert limited, "no ERROR 4003 while PINGs were dropped"
    assert all(f.req_id == 0 and f.message for f in limited)
    # Told once per second of violations, not once per dropped frame.
    assert len(limited) <= 20, len(limited)
    first_error = frames.index(limited[0])
    assert all(isinstance(f, Pong) for f in frames[:first_error])
    assert close_code == ErrorCode.RATE_LIMITED, (close_code, reason)
    await assert_edge_healthy(edge, {ErrorCode.RATE_LIMITED})
    kill_after_flood(edge)

async def test_service_tokens_are_not_rate_limited(edge_factory, clients, token) -> None:
    edge = edge_factory(uid("svc"), "--rate", "100", "--burst", "100")
    room = uid("svc")
    svc = await clients(edge.url, token("origin-worker", kind="service"))
    await svc.join(room)
    futs = [svc.publish_nowait(room, b"%d" % i) for i in range(400)]
    positions = await asyncio.wait_for(asyncio.gather(*futs), 10)  # type: ignore[arg-type]
    assert [p.seq for p in positions] == list(range(1, 401))
    assert svc.errors == []


async def test_rate_limited_request_fails_with_rate_limited_error(edge_factory, clients,
                                                                  token) -> None:
    edge = edge_factory(uid("rl"), "--rate", "100", "--burst", "100")
    room = uid("rl")
    c = await clients(edge.url, token("eager"))
    await c.join(room)
    # 250 frames: ~150 over the budget, below the 200 violations that close.
    futs = [c.publish_nowait(room, b"x") for _ in range(250)]
    _, pending = await asyncio.wait(futs, timeout=5)  # type: ignore[arg-type]
    n_pending = len(pending)
    await c.close()  # fails what is still pending; then retrieve every outcome
    outcomes = await asyncio.gather(*futs, return_exceptions=True)  # type: ignore[arg-type]
    assert n_pending == 0, f"{n_pending} publishes never got an answer"
    assert {type(o) for o in outcomes} <= {Position, RateLimitedError}, outcomes


async def test_sdk_oversize_publish_fails_fast(edge, clients, token) -> None:
    """The SDK refuses locally what the edge would refuse (4413), instead of waiting."""
    room = uid("sdkbig")
    c = await clients(edge.url, token("big"))
    await c.join(room)
    assert c.server_info["max_frame_bytes"] == MAX_FRAME
    big = b"z" * (MAX_FRAME + 10)
    with pytest.raises(ServerError) as info:
        c.publish_nowait(room, big)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(ServerError):
        await c.publish(room, big, reliable=False)
    assert c.outbox_size == 0
    assert await c.publish(room, b"small") is not None  # the connection is fine


# -- everything at once ------------------------------------------------------


async def test_edge_survives_every_kind_of_bad_input(edge_factory, bystander, clients,
                                                     token, transport) -> None:
    """One edge, every bad input in a row; a bystander stays served throughout."""
    edge = edge_factory(uid("gauntlet"), "--max-rooms", "2", "--rate", "100", "--burst", "100")
    by = await bystander(edge)
    expected: set[int] = set()

    async def closed_with(data: bytes | str, code: int) -> None:
        ws = await raw_open(edge.url)
        await ws.send(data)
        assert (await expect_close(ws))[0] == code
        expected.add(code)
        await by.check()

    await closed_with(encode(Hello(PROTOCOL_VERSION, "garbage")), ErrorCode.UNAUTHORIZED)
    await closed_with(encode(Hello(PROTOCOL_VERSION, token("x", ttl=-5))),
                      ErrorCode.TOKEN_EXPIRED)
    await closed_with(encode(Hello(PROTOCOL_VERSION + 1, token("x"))),
                      ErrorCode.UNSUPPORTED_VERSION)
    await closed_with(encode(Ping(1)), ErrorCode.BAD_REQUEST)

    ws = await raw_session(edge.url, token("chaos", rooms=["lobby-*"]))
    for data, code, req in (
        (b"\xc1", ErrorCode.BAD_REQUEST, 0),
        ("text", ErrorCode.BAD_REQUEST, 0),
        (_pack([99, 7]), ErrorCode.UNKNOWN_TYPE, 7),
        (_pack([6, 1, "lobby-a", b"q" * MAX_FRAME, True, 0]), ErrorCode.FRAME_TOO_LARGE, 0),
        (encode(Join(2, "secret", 0)), ErrorCode.FORBIDDEN, 2),
        (encode(Publish(3, "lobby-a", b"x", True, 0)), ErrorCode.NOT_JOINED, 3),
    ):
        if isinstance(data, str) and transport != "ws":
            continue  # text frames exist only on WebSocket
        await ws.send(data)
        await expect_error(ws, code, req)
        expected.add(code)
        await assert_usable(ws)
        await by.check()
    await raw_join(ws, "lobby-a", 4)
    await raw_join(ws, "lobby-b", 5)
    await ws.send(encode(Join(6, "lobby-c", 0)))
    await expect_error(ws, ErrorCode.TOO_MANY_ROOMS, 6)
    expected.add(ErrorCode.TOO_MANY_ROOMS)
    await flood_publishes(ws, "lobby-a", 3000)
    assert (await expect_close(ws))[0] == ErrorCode.RATE_LIMITED
    expected.add(ErrorCode.RATE_LIMITED)
    await by.check()
    await assert_edge_healthy(edge, expected)
    assert by.checks >= (12 if transport == "ws" else 11)  # no text-frame case on QUIC
    kill_after_flood(edge)
