"""msgpack that sends a float in 5 bytes when float32 holds it exactly.

msgpack-python writes every float as float64 (9 bytes).  Game state is mostly floats,
and many of them (whole numbers, halves, values a handler keeps at float32 precision)
are exactly representable as float32: :func:`pack_compact` writes those as float32
and everything else as :func:`msgpack.packb` would.  Any msgpack decoder reads the
result, and decodes each float to the very value that was packed — so a mirror's
state equals the sender's bit for bit.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

__all__ = ["pack_compact", "to_float32"]

_pack = msgpack.Packer(use_bin_type=True).pack
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")


def to_float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (what a float32 field stores)."""
    result: float = _F32.unpack(_F32.pack(value))[0]
    return result


def pack_compact(obj: Any) -> bytes:
    """msgpack bytes of ``obj`` (maps, lists, tuples and primitives), floats that
    float32 represents exactly written as float32."""
    out = bytearray()
    _into(obj, out)
    return bytes(out)


def _into(obj: Any, out: bytearray) -> None:
    t = type(obj)
    if t is float:
        try:
            b = _F32.pack(obj)
        except OverflowError:
            b = b""
        if b and _F32.unpack(b)[0] == obj:
            out += b"\xca" + b
        else:
            out += b"\xcb" + _F64.pack(obj)
    elif t is dict:
        n = len(obj)
        out += bytes((0x80 | n,)) if n < 16 else (
            b"\xde" + n.to_bytes(2, "big") if n < 65536 else b"\xdf" + n.to_bytes(4, "big"))
        for k, v in obj.items():
            out += _pack(k)
            _into(v, out)
    elif t is list or t is tuple:
        n = len(obj)
        out += bytes((0x90 | n,)) if n < 16 else (
            b"\xdc" + n.to_bytes(2, "big") if n < 65536 else b"\xdd" + n.to_bytes(4, "big"))
        for v in obj:
            _into(v, out)
    else:
        out += _pack(obj)
