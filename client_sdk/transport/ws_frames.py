"""RFC 6455 frames for a WebSocket *client* (sans-I/O: bytes in, events out).

:func:`encode_frame` builds the frames a client sends (masked, as RFC 6455 §5.3
requires; ``mask=False`` gives a server's unmasked frame, for test servers and
the bench feeder).  :class:`FrameReader` takes the bytes a server sends, in any
split, and returns complete *events*:

- ``bytes``: one binary message (fragments already joined);
- ``str``: one text message (UTF-8 checked);
- :class:`Ping` / :class:`Pong`: control frames (the caller answers pings);
- :class:`Close`: the peer's close frame (``code`` 1005 when it carried none).

Everything a server must not send raises :class:`WsProtocolError` carrying the
close code to answer with: a masked frame, reserved bits, an unknown opcode, a
fragmented or oversized control frame, a continuation out of place (1002);
invalid UTF-8 (1007); a frame or joined message over ``max_size`` (1009, checked
from the header, before the payload is buffered).  After an error the reader
must not be used again.  No I/O, no asyncio, no clock.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

__all__ = ["CLOSE_NO_STATUS", "OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG",
           "OP_TEXT", "Close", "FrameReader", "Ping", "Pong", "WsProtocolError",
           "encode_close", "encode_frame"]

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
#: Code reported for a close frame without a payload (never sent on the wire).
CLOSE_NO_STATUS = 1005
_DATA_OPS = (OP_CONT, OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class Ping(NamedTuple):
    """A ping from the peer: answer with a pong carrying the same payload."""

    payload: bytes


class Pong(NamedTuple):
    """A pong from the peer (the answer to one of our pings, or unsolicited)."""

    payload: bytes


class Close(NamedTuple):
    """The peer's close frame."""

    code: int
    reason: str


class WsProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to send (1002, 1007, 1009).

    ``events`` are those the same ``feed`` call completed before the violation
    (still valid: deliver them before ending the connection).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.events: list[bytes | str | Ping | Pong | Close] = []


def _valid_close_code(code: int) -> bool:
    # RFC 6455 §7.4: 1004-1006 and 1015 are reserved (never on the wire);
    # 1000-2999 are assigned by the RFC/IANA, 3000-4999 by libraries and apps.
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


class _MaskKeys:
    """Masking keys from ``os.urandom``, fetched 1,024 at a time (one system call
    per 1,024 frames instead of one per frame; still unpredictable, as §5.3 asks)."""

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        pos = self._pos
        if pos >= len(self._pool):
            self._pool, pos = os.urandom(4096), 0
        self._pos = pos + 4
        return self._pool[pos:pos + 4]


_keys = _MaskKeys()


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
                 key: bytes | None = None) -> bytes:
    """One frame; masked with ``key`` (4 random bytes when not given) if ``mask``."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 1 << 16:
        head = bytes((b0, mbit | 126)) + _U16.pack(n)
    else:
        head = bytes((b0, mbit | 127)) + _U64.pack(n)
    if not mask:
        return head + payload
    if key is None:
        key = _keys.next()
    if not n:
        return head + key
    # XOR with the repeated key as one big-int operation: one C-level pass,
    # much faster in CPython than a byte loop (and linear in the size).
    rep = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(rep, "big")).to_bytes(n, "big")
    return head + key + masked


def encode_close(code: int, reason: str = "", *, key: bytes | None = None) -> bytes:
    """A masked close frame (no payload for ``CLOSE_NO_STATUS``; the reason is cut
    to the 123 bytes a control frame leaves for it)."""
    if code == CLOSE_NO_STATUS:
        return encode_frame(OP_CLOSE, b"", key=key)
    raw = reason.encode()[:123]
    while raw:  # do not cut a multi-byte character in half
        try:
            raw.decode()
            break
        except UnicodeDecodeError:
            raw = raw[:-1]
    return encode_frame(OP_CLOSE, _U16.pack(code) + raw, key=key)


def _decode_close(payload: bytes) -> Close:
    if not payload:
        return Close(CLOSE_NO_STATUS, "")
    if len(payload) < 2:
        raise WsProtocolError(1002, "close frame with a 1-byte payload")
    code = _U16.unpack_from(payload)[0]
    if not _valid_close_code(code):
        raise WsProtocolError(1002, f"invalid close code {code}")
    try:
        return Close(code, payload[2:].decode())
    except UnicodeDecodeError:
        raise WsProtocolError(1007, "close reason is not UTF-8") from None


class FrameReader:
    """Turn the bytes a server sends into events (see the module docstring).

    ``feed(data)`` returns the events completed by ``data``, in order (possibly
    none) and raises :class:`WsProtocolError` on a protocol violation.
    A frame split over many reads is buffered until complete (linear cost:
    nothing is re-parsed before the announced length has arrived).
    """

    __slots__ = ("_buf", "_frag", "_frag_op", "_frag_size", "_want", "max_size")

    def __init__(self, max_size: int) -> None:
        #: Largest frame payload and largest joined message, in bytes (at least
        #: 125: shorter frames are not checked against it).
        self.max_size = max(125, max_size)
        self._buf = bytearray()
        self._want = 0  # bytes the incomplete frame at the head of _buf needs in all
        self._frag: list[bytes] = []
        self._frag_op = -1  # opcode of the message being reassembled, -1 = none
        self._frag_size = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | str | Ping | Pong | Close]:
        """Add ``data``; return every event it completes."""
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._want:
                return []
            src = bytes(buf)
            buf.clear()
        else:
            src = data
        self._want = 0
        out: list[bytes | str | Ping | Pong | Close] = []
        try:
            self._parse(src, out)
        except WsProtocolError as exc:
            exc.events = out
            raise
        return out

    def _parse(self, src: bytes, out: list[bytes | str | Ping | Pong | Close]) -> None:
        pos, end, limit = 0, len(src), self.max_size
        while end - pos >= 2:
            b0, b1 = src[pos], src[pos + 1]
            if b1 & 0x80:
                raise WsProtocolError(1002, "a server frame is masked")
            if b0 & 0x70:
                raise WsProtocolError(1002, "reserved bits set (no extension was agreed)")
            n = b1 & 0x7F
            start = pos + 2
            if n >= 126:
                if n == 126:
                    if end - pos < 4:
                        break
                    n = _U16.unpack_from(src, start)[0]
                    start += 2
                else:
                    if end - pos < 10:
                        break
                    n = _U64.unpack_from(src, start)[0]
                    start += 8
                if n > limit:
                    raise WsProtocolError(1009, f"frame of {n} bytes exceeds {limit}")
            stop = start + n
            if stop > end:
                self._want = stop - pos
                break
            payload = src[start:stop]
            pos = stop
            op = b0 & 0x0F
            if op == OP_BINARY and b0 & 0x80 and self._frag_op < 0:
                out.append(payload)  # the common case: one whole binary message
            else:
                self._other(op, bool(b0 & 0x80), payload, out)
        if pos < end:
            self._buf += src[pos:] if pos else src

    def _other(self, op: int, fin: bool, payload: bytes,
               out: list[bytes | str | Ping | Pong | Close]) -> None:
        if op in _CONTROL_OPS:
            if not fin or len(payload) > 125:
                raise WsProtocolError(1002, "fragmented or oversized control frame")
            if op == OP_PING:
                out.append(Ping(payload))
            elif op == OP_PONG:
                out.append(Pong(payload))
            else:
                out.append(_decode_close(payload))
            return
        if op not in _DATA_OPS:
            raise WsProtocolError(1002, f"unknown opcode {op:#x}")
        if op == OP_CONT:
            if self._frag_op < 0:
                raise WsProtocolError(1002, "continuation frame without a message to continue")
            self._frag_size += len(payload)
            if self._frag_size > self.max_size:
                raise WsProtocolError(1009, f"message exceeds {self.max_size} bytes")
            self._frag.append(payload)
            if not fin:
                return
            op, payload = self._frag_op, b"".join(self._frag)
            self._frag.clear()
            self._frag_op, self._frag_size = -1, 0
        elif self._frag_op >= 0:
            raise WsProtocolError(1002, "new message before the fragmented one ended")
        elif not fin:
            self._frag_op, self._frag_size = op, len(payload)
            self._frag.append(payload)
            return
        if op == OP_BINARY:
            out.append(payload)
            return
        try:
            out.append(payload.decode())
        except UnicodeDecodeError:
            raise WsProtocolError(1007, "text message is not UTF-8") from None
