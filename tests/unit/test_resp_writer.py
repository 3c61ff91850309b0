"""The lean append-path Redis connection (:mod:`edge_node.redis_io.resp_writer`): RESP
encoding, reply parsing (errors as values), pipelined FIFO order, NOSCRIPT,
timeouts and reconnects, against a private embedded Redis (``SCRIPT FLUSH`` and
``CLIENT KILL`` here must not disturb other tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from edge_node.local.redis_server import RedisServer, free_port
from edge_node.redis_io.resp_writer import (
    RespConnectionError,
    RespWriter,
    _encode_py,
    encode_command,
)

SCRIPT = "return {KEYS[1], ARGV[1]}"




@pytest.fixture
async def writer(server: RedisServer) -> AsyncIterator[RespWriter]:
    w = RespWriter("127.0.0.1", server.port, scripts=[SCRIPT])
    yield w
    await w.close()


# -- encoding ---------------------------------------------------------------

def test_encode_known_bytes() -> None:
    assert encode_command(("SET", b"k", 12)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"
    assert encode_command(["ECHO", ""]) == b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"
    assert encode_command(("X", "é", -5)) == b"*3\r\n$1\r\nX\r\n$2\r\n\xc3\xa9\r\n$2\r\n-5\r\n"


@pytest.mark.parametrize("args", [
    ("EVALSHA", "a" * 40, 2, "er:{room:r}:owner", "er:{room:r}:log", "e:1", 10_000, 1, 2,
     b"\x00\r\n\xff" * 50),
    ("PING",),
    ("SET", b"", 0),
    ("X", 2**62, -(2**40)),
])
def test_python_encoder_matches_hiredis(args: tuple[object, ...]) -> None:
    assert _encode_py(args) == encode_command(args)  # type: ignore[arg-type]


def test_encode_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        _encode_py(("SET", "k", True))
    with pytest.raises(TypeError):
        _encode_py(("SET", "k", None))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_command(("SET", "k", None))  # type: ignore[arg-type]


def test_from_url() -> None:
    w = RespWriter.from_url("redis://u%40x:p%3Aw@example:6390/3")
    assert w is not None
    assert (w.host, w.port, w.db, w.username, w.password) == ("example", 6390, 3, "u@x", "p:w")
    w = RespWriter.from_url("redis://:secret@h")
    assert w is not None and (w.port, w.db, w.username, w.password) == (6379, 0, None, "secret")
    w = RespWriter.from_url("unix:///tmp/r.sock?db=2")
    assert w is not None and (w.path, w.db) == ("/tmp/r.sock", 2)
    assert RespWriter.from_url("rediss://h:6380/0") is None


# -- replies ----------------------------------------------------------------

async def test_replies_in_order_with_errors_as_values(writer: RespWriter) -> None:
    k = f"rw-{time.monotonic_ns()}"
    res = await writer.execute([
        ("SET", k, "abc"), ("GET", k), ("INCR", k), ("RPUSH", k + ":l", 1, "x", b"\x00"),
        ("LRANGE", k + ":l", 0, -1), ("GET", k + ":missing"), ("NOSUCHCMD",), ("STRLEN", k),
    ])
    assert res[:2] == [b"OK", b"abc"]
    assert isinstance(res[2], ResponseError) and "not an integer" in str(res[2])
    assert res[3:6] == [3, [b"1", b"x", b"\x00"], None]
    assert isinstance(res[6], ResponseError) and "unknown command" in str(res[6]).lower()
    assert res[7] == 3
    assert [await writer.execute([("PING",)])] == [[b"PONG"]]
    assert await writer.execute([]) == []


async def test_large_and_split_replies(writer: RespWriter) -> None:
    k = f"rw-big-{time.monotonic_ns()}"
    big = bytes(range(256)) * 8192  # 2 MiB: arrives in many reads
    res = await writer.execute([("SET", k, big), ("GET", k), ("STRLEN", k)])
    assert res == [b"OK", big, len(big)]
    many = await writer.execute([("ECHO", str(i)) for i in range(5000)])
    assert many == [str(i).encode() for i in range(5000)]


async def test_pipelined_calls_get_their_own_replies(writer: RespWriter) -> None:
    async def one(i: int) -> list[object]:
        return await writer.execute([("ECHO", f"a{i}"), ("ECHO", f"b{i}")] if i % 2 else
                                    [("ECHO", f"a{i}")])

    results = await asyncio.gather(*(one(i) for i in range(300)))
    for i, r in enumerate(results):
        assert r == ([f"a{i}".encode(), f"b{i}".encode()] if i % 2 else [f"a{i}".encode()])
    assert writer.connects == 1


async def test_cancelled_caller_keeps_fifo_aligned(writer: RespWriter) -> None:
    slow = asyncio.ensure_future(writer.execute([("BLPOP", f"rw-none-{time.monotonic_ns()}",
                                                  "0.2")]))
    await asyncio.sleep(0.02)
    slow.cancel()
    assert await writer.execute([("ECHO", "after")]) == [b"after"]  # not the BLPOP's nil
    with pytest.raises(asyncio.CancelledError):
        await slow


# -- scripts ------------------------------------------------------------------

async def test_noscript_reloads_and_retries_once(writer: RespWriter,
                                                 admin: aioredis.Redis) -> None:
    sha = writer.sha(SCRIPT)
    assert await writer.execute([("EVALSHA", sha, 1, "k", "v")]) == [[b"k", b"v"]]
    await admin.script_flush()
    res = await writer.execute([("ECHO", "x"), ("EVALSHA", sha, 1, "k1", "v1"),
                                ("EVALSHA", sha, 1, "k2", "v2")])
    assert res == [b"x", [b"k1", b"v1"], [b"k2", b"v2"]]
    # A script the writer does not know is not retried: NOSCRIPT comes back as a value.
    other = "a" * 40
    (err,) = await writer.execute([("EVALSHA", other, 0)])
    assert isinstance(err, ResponseError) and str(err).startswith("NOSCRIPT")


async def test_scripts_loaded_on_every_connection(writer: RespWriter,
                                                  admin: aioredis.Redis) -> None:
    await writer.connect()
    await admin.script_flush()
    (cid,) = await writer.execute([("CLIENT", "ID")])
    await admin.client_kill_filter(_id=cid)
    await _until(lambda: not writer.connected)
    (ok,) = await writer.execute([("SCRIPT", "EXISTS", writer.sha(SCRIPT))])
    assert ok == [1] and writer.connects == 2


# -- connection trouble ---------------------------------------------------------

async def _until(cond: object, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_killed_connection_fails_in_flight_then_reconnects(
        writer: RespWriter, admin: aioredis.Redis) -> None:
    (cid,) = await writer.execute([("CLIENT", "ID")])
    blocked = asyncio.ensure_future(writer.execute([("BLPOP", f"rw-k-{cid}", 5)]))
    await asyncio.sleep(0.05)
    assert await admin.client_kill_filter(_id=cid) == 1
    with pytest.raises(RespConnectionError):
        await blocked
    assert not writer.connected
    (cid2,) = await writer.execute([("CLIENT", "ID")])
    assert cid2 != cid and writer.connects == 2


async def test_slow_reply_times_out_and_drops_connection(server: RedisServer) -> None:
    w = RespWriter("127.0.0.1", server.port, timeout=0.2)
    try:
        # The reply would come after 30 s: failing within 10 s can only be the 0.2 s
        # timeout, on however loaded a host (a 1 s bound against a 3 s BLPOP was not).
        t0 = time.monotonic()
        with pytest.raises(RespConnectionError, match="no reply"):
            await w.execute([("BLPOP", f"rw-t-{time.monotonic_ns()}", 30)])
        assert time.monotonic() - t0 < 10.0
        assert await w.execute([("PING",)]) == [b"PONG"] and w.connects == 2
    finally:
        await w.close()


async def test_connect_refused_raises_oserror() -> None:
    w = RespWriter("127.0.0.1", free_port(), connect_timeout=0.5)
    with pytest.raises(OSError):
        await w.execute([("PING",)])
    await w.close()


async def test_closed_writer_raises(server: RedisServer) -> None:
    w = RespWriter("127.0.0.1", server.port)
    assert await w.execute([("PING",)]) == [b"PONG"]
    await w.close()
    with pytest.raises(RespConnectionError):
        await w.execute([("PING",)])


async def test_db_and_auth_on_connect(server: RedisServer, admin: aioredis.Redis) -> None:
    url2 = server.url.rsplit("/", 1)[0] + "/2"
    w = RespWriter.from_url(url2)
    assert w is not None
    k = f"rw-db-{time.monotonic_ns()}"
    assert await w.execute([("SET", k, "2")]) == [b"OK"]
    await w.close()
    assert await admin.get(k) is None
    db2 = aioredis.Redis.from_url(url2)
    assert await db2.get(k) == b"2"
    await db2.aclose()
    bad = RespWriter.from_url(f"redis://:wrong@127.0.0.1:{server.port}/0")
    assert bad is not None
    with pytest.raises(RespConnectionError, match="AUTH"):
        await bad.connect()
    await bad.close()


async def test_busy_server_counts_as_connection_trouble(server: RedisServer,
                                                        admin: aioredis.Redis) -> None:
    """``-BUSY`` (like ``-LOADING``) is not this command's fault: it raises and drops
    the connection, so the caller backs off and retries instead of spinning."""
    await admin.config_set("busy-reply-threshold", 20)
    spin = ("local t = redis.call('TIME') local t0 = t[1] * 1e6 + t[2] "
            "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - t0 > 400000 return 1")
    other = aioredis.Redis.from_url(server.url)
    w = RespWriter("127.0.0.1", server.port)
    try:
        await w.connect()
        busy = asyncio.ensure_future(other.eval(spin, 0))
        await asyncio.sleep(0.1)
        with pytest.raises(RespConnectionError, match="BUSY"):
            await w.execute([("GET", "rw-busy")])
        assert not w.connected
        assert await busy == 1
        assert await w.execute([("GET", "rw-busy")]) == [None] and w.connects == 2
    finally:
        await w.close()
        await other.aclose()
        await admin.config_set("busy-reply-threshold", 5000)
