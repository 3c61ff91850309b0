"""The minimal HTTP/1.1 POST client against real loopback servers (asyncio): the
request it writes, status parsing, timeouts, refused connections, malformed replies."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from origin.webhooks.http import HttpError, parse_url, post

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[list[str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    length = next(int(h.split(":", 1)[1]) for h in head if h.lower().startswith(
        "content-length:"))
    return head, await reader.readexactly(length)


async def test_post_writes_a_complete_request_and_parses_the_status() -> None:
    seen: list[tuple[list[str], bytes]] = []

    async def h(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok")
        await writer.drain()
        writer.close()

    async with serve(h) as port:
        resp = await post(f"http://127.0.0.1:{port}/in/hook?x=1", b'{"a":1}',
                          {"X-Edge-Relay-Event-Id": "e:1"}, timeout=5)
    assert (resp.status, resp.reason, resp.headers["x-a"]) == (201, "Created", "b")
    head, body = seen[0]
    assert head[0] == "POST /in/hook?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in head and "Content-Length: 7" in head
    assert "Content-Type: application/json" in head and "X-Edge-Relay-Event-Id: e:1" in head
    assert body == b'{"a":1}'


async def test_error_status_is_a_response_not_an_exception() -> None:
    async def h(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 503 Service Unavailable\r\n\r\n")
        writer.close()

    async with serve(h) as port:
        resp = await post(f"http://127.0.0.1:{port}/", b"{}", timeout=5)
    assert resp.status == 503


async def test_a_silent_server_times_out() -> None:
    release = asyncio.Event()

    async def h(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()  # never answers
        writer.close()

    async with serve(h) as port:
        with pytest.raises(HttpError, match="no response within"):
            await post(f"http://127.0.0.1:{port}/", b"{}", timeout=0.2)
        release.set()


async def test_refused_connection_and_malformed_replies() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(HttpError):
        await post(f"http://127.0.0.1:{port}/", b"{}", timeout=5)
    for reply in (b"SMTP ready\r\n\r\n", b"HTTP/1.1 2000 x\r\n\r\n", b"HTTP/1.1 200"):
        async def h(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    reply: bytes = reply) -> None:
            await read_request(reader)
            writer.write(reply)
            writer.close()

        async with serve(h) as p2:
            with pytest.raises(HttpError):
                await post(f"http://127.0.0.1:{p2}/", b"{}", timeout=5)


def test_parse_url() -> None:
    t = parse_url("https://example.com/a?b=c")
    assert (t.tls, t.host, t.port, t.path) == (True, "example.com", 443, "/a?b=c")
    assert parse_url("http://h:8080").path == "/" and parse_url("http://h:8080").port == 8080
    for bad in ("ftp://h/", "http:///x", "http://u:p@h/", "http://h:99999/"):
        with pytest.raises(ValueError):
            parse_url(bad)


async def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        await post("http://127.0.0.1:9/", b"{}", {"X-A": "b\r\nX-Evil: 1"}, timeout=1)
