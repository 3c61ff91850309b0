"""msgpack that sends a float in 5 bytes when float32 holds it exactly.

msgpack-python writes every float as float64 (9 bytes).  Game state is mostly floats,
and many of them (whole numbers, halves, values a handler keeps at float32 precision)
are exactly representable as float32: :func:`pack_compact` writes those as float32
and everything else as :func:`msgpack.packb` would.  Any msgpack decoder reads the
result, and decodes each float to the very value that was packed — so a mirror's
state equals the sender's bit for bit.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack

__all__ = ["pack_compact", "pack_float", "pack_ops", "to_float32"]

_pack = msgpack.Packer(use_bin_type=True).pack
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")


def to_float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (what a float32 field stores); beyond
    float32's range, an infinity of the same sign."""
    try:
        result: float = _F32.unpack(_F32.pack(value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)
    return result


def pack_float(value: float) -> bytes:
    """One float: 5 bytes when float32 holds it exactly, else 9."""
    try:
        b = _F32.pack(value)
    except OverflowError:
        return b"\xcb" + _F64.pack(value)
    if _F32.unpack(b)[0] == value:
        return b"\xca" + b
    return b"\xcb" + _F64.pack(value)


def pack_ops(ops: list[tuple[tuple[int, ...], Any]], delete: Any) -> bytes:
    """The operation list of a patch (see :mod:`.state_sync`), fast: each path is one
    C-level pack, a float value one :func:`pack_float`."""
    n = len(ops)
    out = [bytes((0x90 | n,)) if n < 16 else (
        b"\xdc" + n.to_bytes(2, "big") if n < 65536 else b"\xdd" + n.to_bytes(4, "big"))]
    for path, value in ops:
        if value is delete:
            out.append(b"\x91" + _pack(path))
            continue
        t = type(value)
        out.append(b"\x92" + _pack(path) + (
            pack_float(value) if t is float else
            _pack(value) if t is int or t is str or t is bool or value is None
            else pack_compact(value)))
    return b"".join(out)


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
