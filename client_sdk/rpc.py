"""Calling a function on the edge (RPC): ``await client.rpc(name, args)``.

The arguments and the result are msgpack values.  The outcomes:

- the function's return value;
- :class:`~client_sdk.errors.FunctionError` when it raised an application error on
  purpose (``kind``, ``details``);
- a :class:`~client_sdk.errors.ServerError` subclass when the relay could not run it:
  :class:`~client_sdk.errors.UnknownFunctionError` (4414),
  :class:`~client_sdk.errors.ForbiddenError` (4403, the token's ``rpc`` claim),
  :class:`~client_sdk.errors.FunctionBusyError` (4010, retry later),
  :class:`~client_sdk.errors.FunctionTimeoutError` (4009),
  :class:`~client_sdk.errors.FunctionFailedError` (4011), or 4400/4413 for arguments
  that are not msgpack or too large;
- :class:`~client_sdk.errors.ConnectionLostError` when the link dropped before the
  answer (a call is never re-sent: the function may or may not have run) and
  :class:`~client_sdk.errors.RequestTimeoutError` when no answer came in ``timeout``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import FunctionError
from .protocol import Rpc, RpcResult, pack_value, unpack_value

if TYPE_CHECKING:
    from .pump import ClientPump

__all__ = ["call"]


async def call(client: ClientPump, name: str, args: Any = None, *,
               timeout: float | None = None) -> Any:
    """Call function ``name`` with ``args`` on the client's edge; see the module doc."""
    reply = await client.request(Rpc(0, name, pack_value(args)), timeout=timeout)
    assert isinstance(reply, RpcResult)
    value = unpack_value(reply.value)
    if reply.error:
        raise FunctionError(name, reply.error, value)
    return value
