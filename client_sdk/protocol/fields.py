"""Field checks shared by the frame parsers (:mod:`.codec`, :mod:`.room_frames`).

Each raises :class:`~client_sdk.protocol.errors.MalformedFrame` (4400) naming the field.
"""

from __future__ import annotations

from typing import Any

from .errors import MalformedFrame

__all__ = ["UINT64_MAX", "uint", "string", "arity", "str_map", "binary"]

UINT64_MAX = 2**64 - 1


def uint(v: object, what: str) -> int:
    """``v`` as an unsigned 64-bit integer (a bool is not an integer)."""
    if type(v) is not int or v < 0 or v > UINT64_MAX:
        raise MalformedFrame(f"{what} must be an unsigned integer")
    return v


def string(v: object, what: str) -> str:
    """``v`` as a string."""
    if type(v) is not str:
        raise MalformedFrame(f"{what} must be a string")
    return v


def binary(v: object, what: str) -> bytes:
    """``v`` as bytes (msgpack ``bin``)."""
    if type(v) is not bytes:
        raise MalformedFrame(f"{what} must be binary")
    return v


def arity(obj: list[Any], n: int, name: str, optional: int = 0) -> None:
    """At least ``n - optional`` elements.  Extra trailing elements are ignored: a
    newer peer may append optional fields without breaking this decoder."""
    if len(obj) < n - optional:
        raise MalformedFrame(f"{name} frame must have at least {n - 1 - optional} fields")


def str_map(v: object, what: str) -> dict[str, Any]:
    """``v`` as a map with string keys."""
    if not isinstance(v, dict) or not all(type(k) is str for k in v):
        raise MalformedFrame(f"{what} must be a map with string keys")
    return v
