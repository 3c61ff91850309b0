"""Length-prefixed records: how protocol frames travel on a QUIC stream (sans-I/O).

A QUIC stream is a byte stream, so each msgpack frame on it is one *record*:
a 4-byte big-endian length followed by that many bytes.  (Datagrams need no
framing: one datagram carries exactly one frame.)  The same framing is used on
raw QUIC (ALPN ``edge-relay/1``) and on WebTransport streams.

:class:`RecordDecoder` takes bytes as they arrive, in any split, and returns
complete records; it refuses a record longer than its limit *before* buffering
it (the length prefix is checked first).  No I/O, no asyncio.
"""

from __future__ import annotations

import struct

__all__ = ["RECORD_HEADER", "RecordDecoder", "RecordTooLarge", "encode_record"]

_LEN = struct.Struct("!I")

#: Bytes of framing in front of every record.
RECORD_HEADER = _LEN.size


class RecordTooLarge(ValueError):
    """A record's length prefix exceeds the decoder's limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"record of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def encode_record(payload: bytes) -> bytes:
    """Frame one payload as a record."""
    return _LEN.pack(len(payload)) + payload


class RecordDecoder:
    """Split a byte stream into records of at most ``max_record`` bytes each.

    ``feed(data)`` returns the records completed by ``data`` (possibly none);
    it raises :class:`RecordTooLarge` as soon as a prefix announces a record
    over the limit, after which the decoder must not be used again.
    """

    __slots__ = ("_buf", "_need", "max_record")

    def __init__(self, max_record: int) -> None:
        self.max_record = max_record
        self._buf = bytearray()
        self._need = -1  # payload length of the record being read, -1 = reading a prefix

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete record."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every record it completes, in order."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while True:
            if self._need < 0:
                if n - pos < RECORD_HEADER:
                    break
                size = _LEN.unpack_from(buf, pos)[0]
                if size > self.max_record:
                    raise RecordTooLarge(size, self.max_record)
                pos += RECORD_HEADER
                self._need = size
            if n - pos < self._need:
                break
            out.append(bytes(buf[pos : pos + self._need]))
            pos += self._need
            self._need = -1
        if pos:
            del buf[:pos]
        return out
