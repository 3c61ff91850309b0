"""HELLO and its resume request, below any transport (``edge_node/sessions/handshake.py``):
each refusal has its close code, with an in-memory connection and no edge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from client_sdk.protocol import (
    PROTOCOL_VERSION,
    Decoder,
    ErrorCode,
    Hello,
    Limits,
    Ping,
    encode,
    mint_token,
)
from edge_node.sessions.handshake import ResumeRequest, parse_resume, read_hello
from edge_node.sessions.session import SessionClose

SECRET = b"s" * 32


class QueueConn:
    """The receiving half of a SessionConn, fed by the test."""

    def __init__(self, *frames: bytes | str) -> None:
        self.q: asyncio.Queue[bytes | str] = asyncio.Queue()
        for f in frames:
            self.q.put_nowait(f)

    async def recv(self) -> bytes | str:
        return await self.q.get()

    async def messages(self) -> AsyncIterator[bytes | str]:  # pragma: no cover - unused
        while True:
            yield await self.q.get()

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...


def hello(token: str, version: int = PROTOCOL_VERSION, resume: Any = None) -> bytes:
    return encode(Hello(version, token, "t", resume))


async def read(*frames: bytes | str, timeout: float = 1.0) -> tuple[Hello, Any]:
    return await read_hello(QueueConn(*frames), Decoder(Limits()),  # type: ignore[arg-type]
                            (SECRET,), timeout)


def token(ttl: float = 60.0) -> str:
    return mint_token(SECRET, "alice", now=time.time(), ttl=ttl)


async def test_a_good_hello_gives_the_frame_and_the_claims() -> None:
    frame, claims = await read(hello(token()))
    assert frame.version == PROTOCOL_VERSION and claims.subject == "alice"


async def close_code(*frames: bytes | str, timeout: float = 1.0) -> tuple[int, str]:
    with pytest.raises(SessionClose) as info:
        await read(*frames, timeout=timeout)
    return info.value.code, info.value.reason


async def test_no_hello_in_time() -> None:
    assert await close_code(timeout=0.01) == (ErrorCode.HANDSHAKE_TIMEOUT, "no HELLO in time")


async def test_text_first_frame() -> None:
    assert (await close_code("hello"))[0] == ErrorCode.BAD_REQUEST


async def test_other_frame_first() -> None:
    code, reason = await close_code(encode(Ping(1)))
    assert (code, reason) == (ErrorCode.BAD_REQUEST, "first frame must be HELLO")


async def test_garbage_first_frame() -> None:
    code, _ = await close_code(b"\xc1\xff\x00")
    assert code == ErrorCode.BAD_REQUEST


async def test_another_protocol_version() -> None:
    code, reason = await close_code(hello(token(), version=PROTOCOL_VERSION + 1))
    assert code == ErrorCode.UNSUPPORTED_VERSION and str(PROTOCOL_VERSION) in reason


async def test_bad_and_expired_tokens() -> None:
    bad = mint_token(b"x" * 32, "alice", now=time.time(), ttl=60)
    assert (await close_code(hello(bad)))[0] == ErrorCode.UNAUTHORIZED
    old = mint_token(SECRET, "alice", now=time.time() - 120, ttl=60)
    assert (await close_code(hello(old)))[0] == ErrorCode.TOKEN_EXPIRED


def test_parse_resume_accepts_a_well_formed_request() -> None:
    req = parse_resume({"sid": "s1", "rt": "r", "att": 2, "rooms": {"a": [1, 3, 4]}}, 10)
    assert req == ResumeRequest("s1", "r", 2, {"a": [1, 3, 4]})
    assert parse_resume({"sid": "s1", "rt": "r"}, 10) == ResumeRequest("s1", "r", 0, {})


@pytest.mark.parametrize("resume", [
    [1, 2],
    {"sid": 1, "rt": "r", "rooms": {}},
    {"sid": "s", "rt": None, "rooms": {}},
    {"sid": "s", "rt": "r", "rooms": []},
    {"sid": "s", "rt": "r", "rooms": {}, "att": -1},
    {"sid": "s", "rt": "r", "rooms": {}, "att": 1.5},
    {"sid": "s", "rt": "r", "rooms": {}, "att": True},
    {"sid": "s", "rt": "r", "rooms": {"a": [0, 1]}},
    {"sid": "s", "rt": "r", "rooms": {"a": [0, 1, -1]}},
    {"sid": "s", "rt": "r", "rooms": {"a": [0, 1, "2"]}},
    {"sid": "s", "rt": "r", "rooms": {"": [0, 1, 2]}},
    {"sid": "s", "rt": "r", "rooms": {3: [0, 1, 2]}},
    {"sid": "s", "rt": "r", "rooms": {"a": [5 << 2, 1, 2]}},  # no delivery policy 5
])
def test_parse_resume_refuses_a_malformed_request(resume: Any) -> None:
    with pytest.raises(SessionClose) as info:
        parse_resume(resume, 10)
    assert info.value.code == ErrorCode.BAD_REQUEST


def test_parse_resume_refuses_too_many_rooms_before_reading_them() -> None:
    rooms: dict[Any, Any] = {f"r{i}": "not even a list" for i in range(11)}
    with pytest.raises(SessionClose) as info:
        parse_resume({"sid": "s", "rt": "r", "rooms": rooms}, 10)
    assert info.value.code == ErrorCode.TOO_MANY_ROOMS
