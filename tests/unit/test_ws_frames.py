"""The SDK's sans-I/O WebSocket client codec: RFC 6455 golden vectors (§5.7, §1.3),
every split of the input, and each protocol violation with its close code."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.transport.ws_frames import (
    CLOSE_NO_STATUS,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    FrameReader,
    Ping,
    Pong,
    WsProtocolError,
    encode_close,
    encode_frame,
)
from client_sdk.transport.ws_handshake import (
    HandshakeError,
    accept_for,
    build_request,
    check_upgrade,
    parse_response,
)
from tests.unit.test_layering import PROTOCOL_FORBIDDEN, SDK, imported_names

KEY = bytes.fromhex("37fa213d")  # the masking key of RFC 6455 §5.7


def _unmask(frame: bytes) -> tuple[int, bool, bytes]:
    """(opcode, fin, payload) of one masked client frame."""
    n = frame[1] & 0x7F
    off = 2
    if n == 126:
        n, off = struct.unpack("!H", frame[2:4])[0], 4
    elif n == 127:
        n, off = struct.unpack("!Q", frame[2:10])[0], 10
    key, body = frame[off:off + 4], frame[off + 4:]
    assert frame[1] & 0x80 and len(body) == n
    return frame[0] & 0x0F, bool(frame[0] & 0x80), bytes(b ^ key[i % 4] for i, b in enumerate(body))


# --- golden vectors (RFC 6455 §5.7) ----------------------------------------------------


def test_rfc_masked_text_and_pong() -> None:
    hello = bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(OP_TEXT, b"Hello", key=KEY) == hello
    assert encode_frame(OP_PONG, b"Hello", key=KEY) == bytes.fromhex("8a8537fa213d7f9f4d5158")


def test_rfc_unmasked_server_frames() -> None:
    r = FrameReader(1 << 20)
    assert r.feed(bytes.fromhex("810548656c6c6f")) == ["Hello"]
    assert r.feed(bytes.fromhex("010348656c")) == []  # fragment 1 of "Hello"
    assert r.feed(bytes.fromhex("80026c6f")) == ["Hello"]
    assert r.feed(bytes.fromhex("890548656c6c6f")) == [Ping(b"Hello")]
    assert r.feed(bytes.fromhex("8a0548656c6c6f")) == [Pong(b"Hello")]
    big = bytes(range(256))
    assert r.feed(bytes.fromhex("827e0100") + big) == [big]
    huge = bytes(65536)
    assert r.feed(bytes.fromhex("827f0000000000010000") + huge) == [huge]


@pytest.mark.parametrize(("size", "head"), [(0, "8280"), (125, "82fd"), (126, "82fe007e"),
                                            (65535, "82feffff"),
                                            (65536, "82ff0000000000010000")])
def test_length_forms_and_mask_round_trip(size: int, head: str) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = encode_frame(OP_BINARY, payload, key=KEY)
    assert frame.startswith(bytes.fromhex(head) + KEY)
    assert _unmask(frame) == (OP_BINARY, True, payload)
    assert FrameReader(1 << 20).feed(encode_frame(OP_BINARY, payload, mask=False)) == [payload]


def test_default_mask_keys_are_fresh_and_valid() -> None:
    frames = [encode_frame(OP_BINARY, b"same payload") for _ in range(2500)]  # > one key pool
    assert len({f[2:6] for f in frames}) > 2400  # 32-bit random keys: collisions are rare
    assert all(_unmask(f) == (OP_BINARY, True, b"same payload") for f in frames)


def test_close_frames() -> None:
    assert encode_close(1000, key=KEY) == bytes.fromhex("888237fa213d3412")
    assert encode_close(CLOSE_NO_STATUS, key=KEY) == bytes.fromhex("888037fa213d")
    op, fin, body = _unmask(encode_close(4001, "é" * 100))  # 200 bytes: cut to 122 (61 é)
    assert (op, fin, body[:2]) == (OP_CLOSE, True, struct.pack("!H", 4001))
    assert body[2:].decode() == "é" * 61
    r = FrameReader(1 << 20)
    assert r.feed(encode_frame(OP_CLOSE, b"\x0f\xa1bye", mask=False)) == [Close(4001, "bye")]
    assert r.feed(encode_frame(OP_CLOSE, b"", mask=False)) == [Close(CLOSE_NO_STATUS, "")]


def test_rfc_handshake_accept() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
    assert accept_for(key) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    req = build_request("edge:8700", "/ws?x=1", key).decode()
    assert req.startswith("GET /ws?x=1 HTTP/1.1\r\nHost: edge:8700\r\n")
    assert f"Sec-WebSocket-Key: {key}\r\n" in req and req.endswith("\r\n\r\n")
    ok = parse_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n"
                        b"Connection: keep-alive, Upgrade\r\n"
                        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    check_upgrade(ok, key)
    with pytest.raises(HandshakeError, match="Accept"):
        check_upgrade(ok, "AAAAAAAAAAAAAAAAAAAAAA==")
    refused = parse_response(b"HTTP/1.1 503 Service Unavailable\r\nX-Retry-After-Ms: 250")
    assert (refused.status, refused.headers["x-retry-after-ms"]) == (503, "250")
    with pytest.raises(HandshakeError, match="503"):
        check_upgrade(refused, key)
    deflate = parse_response(b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                             b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                             b"Sec-WebSocket-Extensions: permessage-deflate")
    with pytest.raises(HandshakeError, match="none was offered"):
        check_upgrade(deflate, key)
    for bad in (b"SSH-2.0-OpenSSH", b"HTTP/1.1 1x1 what", b"HTTP/1.1 200 OK\r\nno colon"):
        with pytest.raises(HandshakeError):
            parse_response(bad)


# --- any split -----------------------------------------------------------------------


def test_every_split_gives_the_same_events() -> None:
    def f(op: int, payload: bytes, fin: bool = True) -> bytes:
        return encode_frame(op, payload, fin=fin, mask=False)

    data = (f(OP_BINARY, b"a" * 10) + f(OP_BINARY, b"b" * 300) + f(OP_PING, b"p")
            + f(OP_BINARY, b"x" * 5, fin=False) + f(OP_PING, b"") + f(0x0, b"y" * 200, fin=False)
            + f(0x0, b"z", fin=True) + f(OP_TEXT, "é".encode()) + f(OP_CLOSE, b"\x03\xe8"))
    want = [b"a" * 10, b"b" * 300, Ping(b"p"), Ping(b""), b"x" * 5 + b"y" * 200 + b"z", "é",
            Close(1000, "")]
    for cut in range(len(data) + 1):
        r = FrameReader(1000)
        got = r.feed(data[:cut]) + r.feed(data[cut:])
        assert got == want, cut
        assert r.buffered == 0


@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(1, 200),
                                                                 max_size=20))
def test_random_messages_and_chunks(messages: list[bytes], chunks: list[int]) -> None:
    data = b"".join(encode_frame(OP_BINARY, m, mask=False) for m in messages)
    r = FrameReader(1000)
    got: list[object] = []
    pos = 0
    for c in chunks:
        got += r.feed(data[pos:pos + c])
        pos += c
    got += r.feed(data[pos:])
    assert got == messages


# --- violations -----------------------------------------------------------------------


@pytest.mark.parametrize(("data", "code"), [
    (bytes.fromhex("828137fa213d00"), 1002),  # masked server frame
    (bytes.fromhex("c200"), 1002),  # RSV1 without an extension
    (bytes.fromhex("8300"), 1002),  # reserved data opcode
    (bytes.fromhex("8b00"), 1002),  # reserved control opcode
    (bytes.fromhex("0900"), 1002),  # fragmented ping
    (bytes.fromhex("897e007e") + bytes(126), 1002),  # control frame over 125 bytes
    (bytes.fromhex("800161"), 1002),  # continuation with nothing to continue
    (bytes.fromhex("02016182016182"), 1002),  # new message inside a fragmented one
    (bytes.fromhex("880103"), 1002),  # close with a 1-byte payload
    (bytes.fromhex("880203ed"), 1002),  # close code 1005 on the wire
    (bytes.fromhex("880303e8ff"), 1007),  # close reason not UTF-8
    (bytes.fromhex("8101ff"), 1007),  # text not UTF-8
    (bytes.fromhex("827f0000010000000000"), 1009),  # 1 TiB announced: refused from the header
    (bytes.fromhex("827e07d1"), 1009),  # 2001 bytes > 2000
    (bytes.fromhex("027e07d0") + bytes(2000) + bytes.fromhex("8001ff"), 1009),  # joined > 2000
])
def test_violations_carry_their_close_code(data: bytes, code: int) -> None:
    with pytest.raises(WsProtocolError) as err:
        FrameReader(2000).feed(data)
    assert err.value.code == code


@pytest.mark.parametrize("name", ["ws_frames", "ws_handshake"])
def test_codec_modules_are_sans_io(name: str) -> None:
    """Same rule as client_sdk/protocol (tests/unit/test_layering.py): no loop, no network."""
    src = (SDK / "transport" / f"{name}.py").read_text()
    names = imported_names(src, f"client_sdk.transport.{name}")
    assert not {n for n in names if n.split(".")[0] in PROTOCOL_FORBIDDEN}
