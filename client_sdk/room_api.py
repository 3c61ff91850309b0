"""The room API of a client: join, leave, publish, presence, functions.

:class:`RoomApi` sits between the I/O pump (:class:`~client_sdk.pump.ClientPump`)
and the connection policy (:class:`~client_sdk.client.Client`, which is what
applications get from :func:`~client_sdk.connect`): everything here is a request or
a publish through the pump, and the subscriptions it keeps.  It never opens a link.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .errors import EdgeRelayError
from .game import GameRoom
from .presence import PresenceView
from .protocol import (
    JOIN_NO_ECHO,
    JOIN_PRESENCE,
    Delivery,
    Join,
    Joined,
    Leave,
    Member,
    Message,
    PresenceList,
    PresenceMembers,
    delivery_flags,
)
from .protocol.events import RecoveryEvent
from .pump import ClientPump, Position, now
from .rpc import call as rpc_call
from .subscription import Subscription

log = logging.getLogger("client_sdk.rooms")

__all__ = ["RoomApi"]


class RoomApi(ClientPump):
    """Rooms, publishes, presence and functions over the pump (see the module doc)."""

    #: Largest amount of queued outbound bytes before ``publish`` waits.
    max_send_buffer: int

    async def join(self, room: str, *, presence: bool = False, echo: bool = True,
                   on_message: Callable[[Message], None] | None = None,
                   queue_size: int = 10_000,
                   options: dict[str, Any] | None = None,
                   presence_grace: float = 5.0,
                   delivery: Delivery | str | None = None) -> Subscription:
        """Join ``room`` and return its :class:`Subscription`.

        With ``on_message`` the callback runs synchronously for each message
        (fastest; the subscription's iterator then yields nothing).  Otherwise
        iterate the subscription with ``async for``.  ``presence=True`` also
        keeps the room's member list (``sub.members``, fetched before this returns)
        and delivers join/leave events (``sub.presence_events()``) without repeats;
        a member reported gone is kept as reconnecting for ``presence_grace``
        seconds and only reported as leaving if it does not come back
        (:mod:`client_sdk.presence`).  ``echo=False`` skips this client's own
        publishes (live and replayed).  ``options`` go to a game room's join hooks
        (see :meth:`join_game`).  ``delivery`` is what the edge does while this
        client reads the room slower than it is written: ``"all"``, ``"latest"``
        (the newest unreliable update of each publish ``key``), ``"drop"`` (oldest
        dropped, :meth:`Subscription.next_drop`) or ``"disconnect"``; None: the
        room's default (docs/protocol.md, delivery policies).  It is kept across
        resumes; ``ValueError`` for an unknown name.
        """
        flags = ((JOIN_PRESENCE if presence else 0) | (0 if echo else JOIN_NO_ECHO)
                 | delivery_flags(delivery))
        sub = self._subs.get(room)
        if sub is None:
            sub = Subscription(self, self._core.track_room(room, flags), on_message,
                               queue_size)
            self._subs[room] = sub
        if presence and sub._view is None:
            sub._view = PresenceView(room, presence_grace)
        try:
            joined = await self.request(Join(0, room, flags, options or {}))
        except BaseException:
            self._subs.pop(room, None)
            self._core.forget_room(room)
            raise
        assert isinstance(joined, Joined)  # the core set the room's position from it
        if sub._view is not None:
            await self._load_members(sub)
        return sub

    async def _load_members(self, sub: Subscription) -> None:
        """Fetch ``sub``'s member list (at join, and after each resume)."""
        try:
            sub._members_loaded(await self.presence(sub.room))
        except EdgeRelayError as exc:  # the next resume fetches it again
            log.warning("presence list of %s not loaded: %s", sub.room, exc)

    def _ev_recovery(self, ev: RecoveryEvent) -> None:
        super()._ev_recovery(ev)
        sub = self._subs.get(ev.room)
        if sub is not None and sub._view is not None:
            self._background(self._load_members(sub))  # what changed while away

    async def join_game(self, room: str, options: dict[str, Any] | None = None, *,
                        timeout: float = 10.0) -> GameRoom:
        """Join game room ``room`` and wait for its state: see :meth:`GameRoom.join`."""
        return await GameRoom.join(self, self._games, room, options, timeout)

    def game(self, room: str) -> GameRoom | None:
        """The :class:`~client_sdk.game.GameRoom` of a joined game room, or None."""
        return self._games.get(room)

    async def leave(self, room: str) -> None:
        """Leave ``room``; its subscription's iterator ends."""
        self._end_room(room, None)
        await self.request(Leave(0, room))

    async def _wait_writable(self) -> None:
        link = self._link
        while link is not None and link.buffered() > self.max_send_buffer:  # noqa: ASYNC110 (no drain event)
            await asyncio.sleep(0.001)

    async def publish(self, room: str, payload: bytes, *, reliable: bool = True,
                      timeout: float | None = None, key: str = "") -> Position | None:
        """Publish ``payload`` to ``room`` (joined first).

        Reliable: the message goes through the outbox; this returns its
        :class:`Position` once the edge confirms it is durable, re-sending it
        across reconnects as needed.  ``timeout`` (seconds, default: wait as
        long as the client lives) gives up: the publish is then dropped from
        the outbox and :class:`RequestTimeoutError` raised (it may still have
        been delivered).  Unreliable (latest-value updates): sent at once,
        returns ``None``; dropped if not connected (counted in
        ``unreliable_dropped``); ``key`` names what it updates (an entity id):
        ``latest`` subscribers get the newest update of each key.
        """
        await self._wait_writable()
        if not reliable:
            self.publish_nowait(room, payload, reliable=False, key=key)
            return None
        fut = self._publish(room, payload, timeout)
        # Shielded: a cancelled caller leaves the publish in the outbox.
        return await asyncio.shield(fut)

    def publish_nowait(self, room: str, payload: bytes, *, reliable: bool = True,
                       key: str = "") -> asyncio.Future[Position] | None:
        """Queue a publish without awaiting (game loops, load generators).

        Reliable: returns a future resolved with the position once durable;
        the message is kept in the outbox and sent (again) whenever connected.
        Unreliable: sent now if connected, else dropped and counted in
        ``unreliable_dropped``; returns ``None``.  ``key``: as in :meth:`publish`.
        """
        if not reliable:
            t = now()
            self._core.send_publish(room, payload, t, reliable=False, key=key)
            self._pump(t)
            return None
        return self._publish(room, payload, None)

    def _publish(self, room: str, payload: bytes,
                 timeout: float | None) -> asyncio.Future[Position]:
        t = now()
        idem = self._core.send_publish(room, payload, t, timeout=timeout)
        fut: asyncio.Future[Position] = asyncio.get_running_loop().create_future()
        self._publishes[idem] = fut
        self._pump(t)
        return fut

    async def presence(self, room: str) -> list[Member]:
        """Members of ``room`` across all edges."""
        reply = await self.request(PresenceList(0, room))
        assert isinstance(reply, PresenceMembers)
        return list(reply.members)

    async def rpc(self, name: str, args: Any = None, *, timeout: float | None = None) -> Any:
        """Call function ``name`` on the edge and return its result (msgpack values);
        raises :class:`FunctionError` and the errors listed in :mod:`client_sdk.rpc`."""
        return await rpc_call(self, name, args, timeout=timeout)

    def subscription(self, room: str) -> Subscription | None:
        """The subscription for ``room``, if joined."""
        return self._subs.get(room)

    def _end_room(self, room: str, exc: EdgeRelayError | None) -> None:
        """Stop tracking ``room``: its subscription ends (with ``exc``, e.g. the edge
        left it for us because a refreshed token no longer allows it), its game too."""
        sub = self._subs.pop(room, None)
        if sub is not None:
            sub._end(exc)
        game = self._games.pop(room, None)
        if game is not None:
            game._close()
        self._core.forget_room(room)
