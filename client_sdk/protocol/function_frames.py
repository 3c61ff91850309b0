"""The function frames (types 35-36): a client calls a function on its edge (RPC).

Wire shapes (docs/protocol.md § functions, golden vectors in tests/golden/frames.json):

=====  ==========  ==========================================  ===============
type   name        elements after the type                      direction
=====  ==========  ==========================================  ===============
35     RPC         req_id, name, args (bin)                      client → edge
36     RPC_RESULT  req_id, error, value (bin)                    edge → client
=====  ==========  ==========================================  ===============

``args`` and ``value`` are msgpack bytes inside a ``bin`` (:func:`pack_value`): the
function gets the decoded arguments and returns any msgpack-able value.  ``error`` is
``""`` when the function returned; otherwise it names the *application* error the
function raised (``RpcError("no_such_player", ...)``) and ``value`` holds its details.
Failures of the relay itself (unknown function, not allowed, too busy, timed out,
crashed) are ERROR frames answering ``req_id`` with a code from :mod:`.codes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import MalformedFrame
from .fields import arity, binary, string, uint

__all__ = ["Rpc", "RpcResult", "FUNCTION_ENCODERS", "FUNCTION_PARSERS", "pack_value",
           "unpack_value", "MAX_FUNCTION_NAME"]

#: Longest function name accepted on the wire.
MAX_FUNCTION_NAME = 128


@dataclass(frozen=True, slots=True)
class Rpc:
    """Client → edge: ``[35, req_id, name, args]`` — call function ``name``.

    Answered by RPC_RESULT or ERROR (same ``req_id``)."""

    req_id: int
    name: str
    args: bytes = b"\xc0"  # msgpack nil


@dataclass(frozen=True, slots=True)
class RpcResult:
    """Edge → client: ``[36, req_id, error, value]`` — what the function returned
    (``error == ""``) or the application error it raised (``value``: its details)."""

    req_id: int
    error: str
    value: bytes


def pack_value(value: Any) -> bytes:
    """msgpack bytes of ``value`` (the ``args``/``value`` of the function frames)."""
    out: bytes = msgpack.packb(value, use_bin_type=True)
    return out


def unpack_value(data: bytes) -> Any:
    """The value of ``args``/``value``; :class:`ValueError` when it is not msgpack."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, max_ext_len=0)
    except Exception as exc:
        raise ValueError("not a msgpack value") from exc


FUNCTION_ENCODERS: dict[type[Any], Any] = {
    Rpc: lambda f: [35, f.req_id, f.name, f.args],
    RpcResult: lambda f: [36, f.req_id, f.error, f.value],
}


def _p_rpc(d: Any, o: list[Any]) -> Rpc:
    arity(o, 4, "RPC")
    name = string(o[2], "name")
    if not name or len(name) > MAX_FUNCTION_NAME:
        raise MalformedFrame(f"function name must be 1-{MAX_FUNCTION_NAME} characters")
    return Rpc(uint(o[1], "req_id"), name, binary(o[3], "args"))


def _p_rpc_result(d: Any, o: list[Any]) -> RpcResult:
    arity(o, 4, "RPC_RESULT")
    return RpcResult(uint(o[1], "req_id"), string(o[2], "error"), binary(o[3], "value"))


FUNCTION_PARSERS: dict[int, Any] = {35: _p_rpc, 36: _p_rpc_result}
