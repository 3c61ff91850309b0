"""What a function sees of the edge: the caller (RPC) or the event, and a few bounded
ways to act through the edge's existing paths (rooms, presence, history, device
commands), with the guarantees those paths already give.

:meth:`Context.publish` goes through the room machine exactly like a client's reliable
publish: it returns once the message is durable (its position), so a function that
returned has had its publishes stored.  An RPC's context acts with the caller's rights
(its token's ``rooms`` and ``pub`` patterns); an event handler's context is the edge's
own (any room).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from client_sdk.protocol import (
    Ack,
    Claims,
    Decoder,
    Error,
    Member,
    Message,
    ProtocolError,
    pack_value,
)

if TYPE_CHECKING:
    from edge_node.fanout.hub import Hub
    from edge_node.iot.service import IotService
    from edge_node.transports.outbound import FrameSink

__all__ = ["Context", "CallContext", "EventContext", "Event", "FunctionSender",
           "PublishRefused"]

log = logging.getLogger("edge_node.functions")

_DECODER = Decoder()


class PublishRefused(Exception):
    """A function's publish was refused (not allowed, a game room, or the room refused
    it: ``code`` is the protocol's error code)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"[{code}] {text}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Event:
    """One event for a handler: ``trigger`` (see ``TRIGGERS``), ``key`` (device id or
    room), ``body`` (per trigger, docs/functions.md) and when it happened (ms)."""

    trigger: str
    key: str
    body: dict[str, Any]
    ts_ms: int


class FunctionSender:
    """The sender of a function's publishes (a ``SessionLike`` that is no member):
    ``fn:NAME`` in the MESSAGE's ``sender``.  It turns the room's ACK or ERROR for each
    publish into the result of a future."""

    def __init__(self, name: str) -> None:
        self.session_id = f"fn:{name}"
        self.member = Member(self.session_id, self.session_id, "service")
        self.out = cast("FrameSink", None)
        self.closed = False
        self._next = 0
        self._waiting: dict[int, asyncio.Future[tuple[int, int]]] = {}

    def expect(self) -> tuple[int, asyncio.Future[tuple[int, int]]]:
        """A fresh request id and the future its ACK settles."""
        self._next += 1
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = fut
        return self._next, fut

    def forget(self, req_id: int) -> None:
        """Stop waiting for ``req_id`` (its caller gave up)."""
        self._waiting.pop(req_id, None)

    def send(self, data: bytes) -> None:
        """An ACK or ERROR from the room machine for one of this sender's publishes."""
        try:
            frame = _DECODER.decode(data)
        except ProtocolError:
            return
        fut = self._waiting.pop(getattr(frame, "req_id", 0), None)
        if fut is None or fut.done():
            return
        if isinstance(frame, Ack):
            fut.set_result((frame.epoch, frame.seq))
        elif isinstance(frame, Error):
            fut.set_exception(PublishRefused(frame.code, frame.message))


class Context:
    """The edge as a function sees it.  ``edge_id``; ``name`` (the function's);
    ``log`` (a logger).  Coroutines may only be awaited by ``async def`` functions."""

    def __init__(self, name: str, hub: Hub, iot: IotService | None, sender: FunctionSender,
                 claims: Claims | None) -> None:
        self.name = name
        self.edge_id = hub.edge_id
        self.log = log
        self._hub = hub
        self._iot = iot
        self._sender = sender
        self._claims = claims

    def _check(self, room: str, publish: bool) -> None:
        c = self._claims
        if c is not None and not (c.may_publish(room) if publish else c.may_join(room)):
            raise PublishRefused(4403, f"the caller's token does not allow {room!r}")

    async def publish(self, room: str, value: Any = None, *, raw: bytes | None = None,
                      reliable: bool = True) -> tuple[int, int]:
        """Publish ``value`` (msgpack-encoded; or ``raw`` bytes as they are) to ``room``.
        Reliable: returns ``(epoch, seq)`` once the message is durable.  Unreliable:
        returns ``(0, 0)`` at once.  Raises :class:`PublishRefused`."""
        self._check(room, publish=True)
        hub = self._hub
        games = hub.games
        if games is not None and games.is_game(room):
            raise PublishRefused(4400, f"{room!r} is a game room: its state is its handler's")
        payload = raw if raw is not None else pack_value(value)
        if room not in hub.rooms:
            await hub.ensure_room(room)
        if not reliable:
            hub.publish(self._sender, room, payload, False, 0, 0)
            return 0, 0
        req_id, fut = self._sender.expect()
        try:
            hub.publish(self._sender, room, payload, True, req_id, secrets.randbits(63) or 1)
            return await fut
        finally:
            self._sender.forget(req_id)

    async def presence(self, room: str) -> list[Member]:
        """Members of ``room`` across all edges."""
        self._check(room, publish=False)
        return await self._hub.presence(room)

    async def recent(self, room: str, count: int = 100) -> list[Message]:
        """The newest ``count`` (at most 1,000) stored messages of ``room``, oldest first."""
        self._check(room, publish=False)
        records = await self._hub.store.recent(room, max(1, min(count, 1000)))
        return [Message(room, r.epoch, r.seq, r.sender, r.payload, r.idem) for r in records]

    async def command(self, device: str, name: str, args: dict[str, Any] | None = None, *,
                      ttl: float = 60.0) -> bool:
        """Send command ``name`` to ``device`` (COMMAND frame) if it is connected here,
        else keep it until it connects here or ``ttl`` s pass.  True if sent now.
        Event handlers only (an RPC's caller is not a device operator)."""
        if self._claims is not None and self._claims.kind != "service":
            raise PublishRefused(4403, "only event handlers and service callers send "
                                       "device commands")
        if self._iot is None:
            raise PublishRefused(4400, "this edge has no IoT service")
        cid = f"fn-{secrets.token_hex(6)}"
        expires = int((time.time() + ttl) * 1000)
        return self._iot.deliver_command(device, cid, {"name": name, "args": args or {}},
                                         expires)


class CallContext(Context):
    """An RPC's context: the caller's ``subject``, ``kind``, ``claims`` (verified token),
    ``info`` (the token's ``info`` claim, ``{}`` when absent) and ``session_id``."""

    def __init__(self, name: str, hub: Hub, iot: IotService | None, sender: FunctionSender,
                 claims: Claims, session_id: str) -> None:
        super().__init__(name, hub, iot, sender, claims)
        self.claims = claims
        self.subject = claims.subject
        self.kind = claims.kind
        self.info: dict[str, Any] = dict(claims.info or {})
        self.session_id = session_id


class EventContext(Context):
    """An event handler's context: ``event`` (:class:`Event`); acts as the edge."""

    def __init__(self, name: str, hub: Hub, iot: IotService | None, sender: FunctionSender,
                 event: Event) -> None:
        super().__init__(name, hub, iot, sender, None)
        self.event = event
