"""The SDK's WebSocket link (client_sdk.transport.ws) against real sockets.

Scripted raw servers on loopback (asyncio streams speaking RFC 6455 by hand)
play what an edge may do: refuse, close with a code, drop the TCP connection,
fragment, ping, freeze, send oversized or masked frames.  Real edges cover the
connection-rate refusal and the full SDK on top; ``wss://`` runs against a
``websockets`` TLS server with a self-signed certificate.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from client_sdk.errors import ConnectError
from client_sdk.transport import LinkClosed, RefusedError, TlsOptions, TlsVerifyError, open_link
from client_sdk.transport.ws import WsLink
from client_sdk.transport.ws_frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    encode_frame,
)
from client_sdk.transport.ws_handshake import accept_for

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame(op: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked server frame."""
    return encode_frame(op, payload, fin=fin, mask=False)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one masked client frame: (opcode, unmasked payload)."""
    b0, b1 = await reader.readexactly(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    key = await reader.readexactly(4)
    body = await reader.readexactly(n)
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))


@asynccontextmanager
async def raw_server(script: Script, *, status: bytes = b"", accept: str | None = None,
                     requests: list[str] | None = None, early: bytes = b"") -> AsyncIterator[str]:
    """A server on loopback: answers the upgrade (or ``status``, a whole non-101
    response; ``early`` bytes go in the same write as the 101), then runs ``script``;
    yields its ``ws://`` URL."""
    tasks: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        writers.append(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            if requests is not None:
                requests.append(head)
            if status:
                writer.write(status)
                await writer.drain()
                writer.close()
                return
            key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                       if line.lower().startswith("sec-websocket-key:"))
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                         + (accept or accept_for(key)).encode() + b"\r\n\r\n" + early)
            await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.close()
        for w in writers:  # scripts end on their own once their reads fail
            w.transport.abort()
        async with asyncio.timeout(5):
            await asyncio.gather(*tasks)
        await server.wait_closed()


async def open_ws(url: str, **kw: Any) -> WsLink:
    kw.setdefault("connect_timeout", 5.0)
    kw.setdefault("ping_interval", None)
    kw.setdefault("ping_timeout", None)
    return await WsLink.open(url, **kw)


async def drain(link: WsLink, limit: float = 10.0) -> tuple[list[bytes | str], Exception | None]:
    """Everything ``messages()`` yields, and how it ended (None: normally)."""
    got: list[bytes | str] = []
    try:
        async with asyncio.timeout(limit):
            async for m in link.messages():
                got.append(m)
    except LinkClosed as exc:
        return got, exc
    return got, None


async def until(cond: Callable[[], object], limit: float = 5.0) -> None:
    """Wait (bounded) until ``cond()`` is true: the server side runs concurrently."""
    async with asyncio.timeout(limit):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client goes


# --- handshake ---------------------------------------------------------------------------


async def test_request_has_host_path_and_query_and_checks_accept() -> None:
    requests: list[str] = []
    async with raw_server(idle, requests=requests) as url:
        link = await open_ws(f"{url}/room/path?token=abc&x=1")
        await link.close()
    line, *headers = requests[0].split("\r\n")
    assert line == "GET /room/path?token=abc&x=1 HTTP/1.1"
    assert f"Host: {url.removeprefix('ws://')}" in headers
    assert "Sec-WebSocket-Version: 13" in headers
    async with raw_server(idle, accept="bm90IHRoZSByaWdodCBrZXk=") as url:
        with pytest.raises(ConnectError, match="Sec-WebSocket-Accept"):
            await open_ws(url)


async def test_refusal_carries_the_retry_hint() -> None:
    busy = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
            b"X-Retry-After-Ms: 250\r\nContent-Length: 5\r\n\r\nbusy\n")
    async with raw_server(idle, status=busy) as url:
        with pytest.raises(RefusedError, match="HTTP 503") as err:
            await open_ws(url)
        assert err.value.retry_hint == 0.25
    forbidden = b"HTTP/1.1 403 Forbidden\r\nX-Retry-After-Ms: 250\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(idle, status=forbidden) as url:
        with pytest.raises(RefusedError, match="HTTP 403") as err:
            await open_ws(url)
        assert err.value.retry_hint == 0.0  # a hint only counts on a 503


async def test_edge_connection_rate_refusal_has_a_hint(edge_factory: Any) -> None:
    """A real edge over its connection rate answers 503 + X-Retry-After-Ms."""
    edge = edge_factory("edge-rate", "--connect-rate", "1")
    links: list[WsLink] = []
    try:
        with pytest.raises(RefusedError) as err:
            for _ in range(50):
                links.append(await open_ws(edge.ws_url))
        assert err.value.retry_hint > 0
    finally:
        for link in links:
            link.abort()


async def test_connect_timeout_when_the_server_never_answers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers the upgrade
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(TimeoutError):
            await open_ws(f"ws://127.0.0.1:{port}", connect_timeout=0.3)
    finally:
        server.close()
        await server.wait_closed()


async def test_frames_in_the_same_packet_as_the_101() -> None:
    early = frame(OP_BINARY, b"first") + frame(OP_CLOSE, b"\x03\xe9going away")
    async with raw_server(idle, early=early) as url:
        got, end = await drain(await open_ws(url))
    assert got == [b"first"] and end is None  # 1001 is a normal end


async def test_unsupported_urls() -> None:
    with pytest.raises(ValueError):
        await open_ws("ws:///no-host")


# --- messages, fragments, text, pings ----------------------------------------------------


async def test_fragments_text_and_pings() -> None:
    got_pong: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(OP_BINARY, b"one")
                     + frame(OP_BINARY, b"tw", fin=False) + frame(OP_PING, b"hi?")
                     + frame(0x0, b"o-", fin=False) + frame(0x0, b"parts")
                     + frame(OP_TEXT, "text é".encode()) + frame(OP_BINARY, b"three"))
        op, payload = await read_frame(reader)
        got_pong.append(payload if op == OP_PONG else b"not a pong")
        writer.write(frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye"))
        assert await read_frame(reader) == (OP_CLOSE, struct.pack("!H", 1000))
        await reader.read()

    async with raw_server(script) as url:
        link = await open_ws(url)
        got, end = await drain(link)
    assert got == [b"one", b"two-parts", "text é", b"three"]
    assert got_pong == [b"hi?"]
    assert end is None and (link.close_code, link.close_reason) == (1000, "bye")


async def test_recv_skips_text_and_raises_with_the_edge_close_code() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(OP_TEXT, b"hello") + frame(OP_BINARY, b"bin")
                     + frame(OP_CLOSE, struct.pack("!H", 4401) + b"bad token"))
        await reader.read()

    async with raw_server(script) as url:
        link = await open_ws(url)
        assert await link.recv() == b"bin"
        with pytest.raises(LinkClosed) as err:
            await link.recv()
    assert (err.value.code, err.value.reason) == (4401, "bad token")
    assert (link.close_code, link.close_reason) == (4401, "bad token")


async def test_abnormal_close_code_makes_messages_raise() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(OP_BINARY, b"x") + frame(OP_CLOSE, struct.pack("!H", 4503)))
        await reader.read()

    async with raw_server(script) as url:
        got, end = await drain(await open_ws(url))
    assert got == [b"x"]
    assert isinstance(end, LinkClosed) and end.code == 4503


async def test_tcp_drop_without_close_frame() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(OP_BINARY, b"last"))
        await writer.drain()
        writer.transport.abort()

    async with raw_server(script) as url:
        link = await open_ws(url)
        got, end = await drain(link)
    assert got == [b"last"]
    assert isinstance(end, LinkClosed) and end.code is None
    assert link.close_code is None and link.close_reason == ""
    assert link.buffered() == 0
    link.send(b"after the end")  # dropped, never raises


# --- protocol violations -----------------------------------------------------------------


@pytest.mark.parametrize(("bad", "code"), [
    (bytes.fromhex("828437fa213d") + b"abcd", 1002),  # a masked server frame
    (bytes.fromhex("827e07d1") + bytes(2001), 1009),  # over max_size (2000)
    (bytes.fromhex("8101ff"), 1007),  # text that is not UTF-8
])
async def test_protocol_violation_closes_with_its_code(bad: bytes, code: int) -> None:
    answer: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(OP_BINARY, b"fine") + bad)
        answer.append(await read_frame(reader))
        await reader.read()

    async with raw_server(script) as url:
        link = await open_ws(url, max_size=2000)
        got, end = await drain(link)
        await until(lambda: answer)
    assert got == [b"fine"]
    assert answer and answer[0][0] == OP_CLOSE
    assert struct.unpack("!H", answer[0][1][:2])[0] == code
    assert isinstance(end, LinkClosed) and end.code is None  # the edge sent no close frame
    assert "protocol error" in end.reason


# --- keepalive, close, flow control ------------------------------------------------------


async def test_keepalive_answered_keeps_the_link() -> None:
    pings: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            op, payload = await read_frame(reader)
            assert op == OP_PING
            pings.append(payload)
            writer.write(frame(OP_PONG, payload))
        writer.write(frame(OP_BINARY, b"still here") + frame(OP_CLOSE, b"\x03\xe8"))
        await reader.read()

    async with raw_server(script) as url:
        link = await open_ws(url, ping_interval=0.05, ping_timeout=2.0)
        got, end = await drain(link)
    assert len(pings) == 3 and got == [b"still here"] and end is None


async def test_keepalive_detects_a_frozen_peer() -> None:
    """A peer that keeps the TCP connection but never answers (as a SIGSTOPped
    edge): the link ends within ping_interval + ping_timeout, as if cut."""
    async def frozen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(OP_BINARY, b"hello"))
        await reader.read()  # swallows the pings, answers nothing

    async with raw_server(frozen) as url:
        link = await open_ws(url, ping_interval=0.1, ping_timeout=0.2)
        got, end = await drain(link, limit=10.0)
    assert got == [b"hello"]
    assert isinstance(end, LinkClosed) and end.code is None
    assert "keepalive ping timeout" in end.reason


async def test_client_close_handshake_and_unanswered_close() -> None:
    seen: list[tuple[int, bytes]] = []

    async def polite(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_frame(reader))
        writer.write(frame(OP_CLOSE, seen[-1][1]))  # echo
        await writer.drain()

    async with raw_server(polite) as url:
        link = await open_ws(url)
        await link.close(4101, "handed off")
    assert seen == [(OP_CLOSE, struct.pack("!H", 4101) + b"handed off")]
    assert link.close_code == 4101
    with pytest.raises(LinkClosed):
        await link.recv()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # gets the close frame, never answers

    async with raw_server(mute) as url:
        link = await open_ws(url)
        await link.close()  # gives up after CLOSE_TIMEOUT and drops the connection
    assert link.close_code is None


async def test_flow_control_pauses_and_resumes_without_loss() -> None:
    count = 2000

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(count):
            writer.write(frame(OP_BINARY, i.to_bytes(4, "big") + bytes(200)))
        writer.write(frame(OP_CLOSE, b"\x03\xe8"))
        await writer.drain()
        await reader.read()

    async with raw_server(script) as url:
        link = await open_ws(url, max_queue=8)
        await until(lambda: len(link._queue) > 8)  # the app is "busy"
        assert link._paused  # reading stopped past max_queue (one socket read's worth)
        held = len(link._queue)
        await asyncio.sleep(0.05)
        assert len(link._queue) == held < count  # nothing more read while paused
        got, end = await drain(link)
    assert [int.from_bytes(m[:4], "big") for m in got] == list(range(count))  # type: ignore[index]
    assert end is None


async def test_keepalive_waits_while_reading_is_paused() -> None:
    """The pong sits behind a backlog the application has not read yet: not a dead link."""
    count = 3000
    pings = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pings
        writer.write(b"".join(frame(OP_BINARY, bytes(200)) for _ in range(count)))
        while pings < 3:
            op, payload = await read_frame(reader)
            if op == OP_PING:
                pings += 1
                writer.write(frame(OP_PONG, payload))
        writer.write(frame(OP_CLOSE, b"\x03\xe8"))
        await reader.read()

    async with raw_server(script) as url:
        link = await open_ws(url, max_queue=8, ping_interval=0.05, ping_timeout=0.1)
        await until(lambda: link._paused)
        await until(lambda: pings >= 1)  # a ping went out and was answered...
        await asyncio.sleep(0.3)  # ...but the pong is unread, past ping_timeout
        assert link.close_code is None and not link._ended
        got, end = await drain(link)
    assert len(got) == count and end is None


async def test_abort_drops_without_close_frame() -> None:
    frames: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames.append(await reader.read())

    async with raw_server(script) as url:
        link = await open_ws(url)
        link.send(b"payload")
        await asyncio.sleep(0.05)
        link.abort()
        got, end = await drain(link)
        await until(lambda: frames)
    assert got == [] and isinstance(end, LinkClosed) and end.code is None
    assert frames[0][0] == 0x80 | OP_BINARY and len(frames[0]) == 2 + 4 + len(b"payload")


# --- wss -------------------------------------------------------------------------------


async def test_wss_with_a_self_signed_certificate(quic_cert: tuple[str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    cert, key = quic_cert
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def echo(ws: ServerConnection) -> None:
        async for m in ws:
            await ws.send(m)

    async with serve(echo, "127.0.0.1", 0, ssl=ctx, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"wss://localhost:{port}/"
        link = await open_link(url, connect_timeout=5.0, ping_interval=None, ping_timeout=None,
                               tls=TlsOptions(ca_file=cert))
        link.send(b"over tls")
        assert await link.recv() == b"over tls"
        assert link.buffered() == 0
        await link.close()
        assert link.close_code == 1000
        # Not trusted without the CA: the certificate check fails (the SDK's typed
        # error, translated from ssl.SSLCertVerificationError).
        monkeypatch.delenv("EDGE_RELAY_CA_FILE", raising=False)
        with pytest.raises(TlsVerifyError, match="self-signed certificate") as info:
            await open_link(url, connect_timeout=5.0, ping_interval=None, ping_timeout=None)
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        insecure = await open_link(url, connect_timeout=5.0, ping_interval=None,
                                   ping_timeout=None, tls=TlsOptions(verify=False))
        await insecure.close()
