"""A joined game room on the client: the state mirror, inputs, events, server time.

Get one with :meth:`client_sdk.Client.join_game`::

    game = await client.join_game("arena-1", {"name": "ada"})
    game.on_change(["players", client.session_id], lambda path, value: ...)
    await game.send("move", {"dx": 1, "dy": 0})     # reliable, exactly once
    async for version in game.changes():            # or read game.state any time
        ...

The mirror (:class:`~client_sdk.protocol.state_sync.StateMirror`) takes the room's
ROOM_STATE and ROOM_PATCH frames; a patch that does not follow the version it holds
(one was lost or reordered) is not applied: the room asks the edge for its whole view
again (ROOM_RESYNC) and counts it in :attr:`GameRoom.resyncs` — it never diverges
silently.  Inputs are reliable publishes (the outbox, idempotency keys and resume of
:meth:`~client_sdk.Client.publish`).  ERRORs about this room (an input the room
refused, the room failing) are kept in :attr:`GameRoom.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from .protocol import RoomEvent, RoomPatch, RoomResync, RoomStateFrame, pack_input
from .protocol.state_sync import PatchRefused, Path, StateMirror, decode_value, state_checksum

if TYPE_CHECKING:
    from .pump import Position
    from .room_api import RoomApi

__all__ = ["GameRoom"]


class GameRoom:
    """One game room this client plays in (see the module docstring)."""

    def __init__(self, client: RoomApi, name: str, *, queue_size: int = 1000) -> None:
        self.client = client
        self.name = name
        self.mirror = StateMirror()
        #: Ticks per second of the room (from its first ROOM_STATE).
        self.tick_rate = 0
        #: Resyncs asked because a patch did not follow; full states received.
        self.resyncs = 0
        self.full_states = 0
        #: (code, text) of ERRORs about this room, the last 100.
        self.errors: deque[tuple[int, str]] = deque(maxlen=100)
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(queue_size)
        self._changes: asyncio.Queue[int] = asyncio.Queue(queue_size)
        self._has_state = asyncio.Event()
        self._resync_asked = False
        #: Smoothed (room time - local monotonic time), seconds; None until a frame.
        self._offset: float | None = None
        self._removers: list[Callable[[], None]] = [
            client.add_frame_handler(RoomStateFrame, self._on_state),
            client.add_frame_handler(RoomPatch, self._on_patch),
            client.add_frame_handler(RoomEvent, self._on_event),
            client.add_error_handler(self._on_error),
        ]

    @classmethod
    async def join(cls, client: RoomApi, games: dict[str, GameRoom], room: str,
                   options: dict[str, Any] | None, timeout: float) -> GameRoom:
        """Join game room ``room`` (``options`` go to its join hooks), wait for its
        first state and return the room, kept in ``games`` until it is left.  A join
        the room refuses raises :class:`~client_sdk.errors.ServerError` (4410, or 4007
        when the room failed); no state within ``timeout`` raises ``TimeoutError``."""
        game = games.get(room)
        if game is None:
            game = games[room] = cls(client, room)
        joined = False
        try:
            await client.join(room, options=options)
            joined = True
            await game.wait_state(timeout)
        except BaseException:
            games.pop(room, None)
            game._close()
            if joined:  # in, but no state came: do not stay a silent member
                with contextlib.suppress(Exception):
                    await client.leave(room)
            raise
        return game

    # -- reading the state ----------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        """The room's state as this client sees it (plain dicts and lists; read only)."""
        return self.mirror.state

    @property
    def version(self) -> int:
        """The state version held (0 before the first full state)."""
        return self.mirror.version

    @property
    def tick(self) -> int:
        """The room tick of the state held."""
        return self.mirror.tick

    def checksum(self) -> str:
        """A digest of :attr:`state` (equal to the owner's when in step)."""
        return state_checksum(self.mirror.state)

    def on_change(self, prefix: Path | list[str | int],
                  fn: Callable[[Path, Any], None]) -> Callable[[], None]:
        """Call ``fn(path, value)`` for each change at or under ``prefix`` (``[]``: all;
        ``value`` None for a delete); returns a function that removes it."""
        return self.mirror.on_change(prefix, fn)

    async def changes(self) -> AsyncIterator[int]:
        """Yield the state version after each change (full state or patch), until
        the room is left."""
        while True:
            version = await self._changes.get()
            if version < 0:
                return
            yield version

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        """Yield ``(kind, payload)`` of each ROOM_EVENT from the room's code."""
        while True:
            kind, payload = await self._events.get()
            if kind == "" and payload is self:
                return
            yield kind, payload

    async def wait_state(self, timeout: float = 10.0) -> None:
        """Wait for the first full state (raises ``TimeoutError``).  If it does not come
        within a second of the call, it is asked for again (ROOM_RESYNC), then after 2 and
        4 s more: a state lost on its way (a live message between edges) is not waited
        for forever."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wait = 1.0
        while not self._has_state.is_set():
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no state from game room {self.name!r} in {timeout:g} s")
            try:
                await asyncio.wait_for(self._has_state.wait(), min(wait, left))
            except TimeoutError:
                if loop.time() < deadline:
                    self._ask_resync()
                    wait = min(wait * 2, 4.0)

    def server_time(self) -> float:
        """The room's clock now, in seconds (``tick / tick_rate``), for interpolation.

        Estimated from the frames received (a frame's tick, plus the time since it
        arrived, smoothed: late frames do not drag it back) plus half the measured
        round-trip time (``client.rtt``, set by :meth:`~client_sdk.Client.ping`: call
        it now and then), the usual one-way estimate.  0.0 before the first state."""
        if self._offset is None:
            return 0.0
        rtt = self.client.rtt or 0.0
        return time.monotonic() + self._offset + rtt / 2

    # -- acting -------------------------------------------------------------------

    async def send(self, kind: str, value: Any = None, *,
                   timeout: float | None = None) -> Position | None:
        """Send an input (reliable; applied by the room at its next tick).  Returns
        its position once durable.  The room may still refuse it: see
        :attr:`errors` (4411 rejected, 4003 too many in one tick)."""
        return await self.client.publish(self.name, pack_input(kind, value), timeout=timeout)

    def send_nowait(self, kind: str, value: Any = None) -> asyncio.Future[Position] | None:
        """:meth:`send` without waiting (game loops)."""
        return self.client.publish_nowait(self.name, pack_input(kind, value))

    def resync(self) -> None:
        """Ask for the whole view again (done by itself when a patch does not follow)."""
        self.resyncs += 1
        self._resync_asked = True
        self.client.send_frame(RoomResync(self.name, self.mirror.version))

    async def leave(self) -> None:
        """Leave the room (same as ``client.leave(name)``)."""
        await self.client.leave(self.name)

    # -- frames ----------------------------------------------------------------------

    def _clock(self, tick: int) -> None:
        if not self.tick_rate:
            return
        sample = tick / self.tick_rate - time.monotonic()
        # Frames arrive late, never early: follow a later sample at once, an earlier
        # one slowly (a delayed frame must not drag the clock back).
        if self._offset is None or sample > self._offset:
            self._offset = sample
        else:
            self._offset += (sample - self._offset) * 0.05

    def _on_state(self, f: RoomStateFrame) -> None:
        if f.room != self.name:
            return
        try:
            self.mirror.load(f.version, f.tick, f.state)
        except PatchRefused:
            return
        self.tick_rate = f.tick_rate
        self.full_states += 1
        self._resync_asked = False
        self._clock(f.tick)
        self._has_state.set()
        self._changed()

    def _on_patch(self, f: RoomPatch) -> None:
        if f.room != self.name:
            return
        if not self.mirror.version:  # a patch before any state: the state was lost
            if not self._resync_asked:
                self._ask_resync()
            return
        try:
            self.mirror.patch(f.base, f.version, f.tick, f.ops)
        except PatchRefused:
            if f.version > self.mirror.version and not self._resync_asked:
                self._ask_resync()
            return
        self._clock(f.tick)
        self._changed()

    def _ask_resync(self) -> None:
        try:
            self.resync()
        except Exception:
            self._resync_asked = False  # not connected: the resume sends a full state

    def _on_event(self, f: RoomEvent) -> None:
        if f.room != self.name:
            return
        try:
            payload = decode_value(f.payload)
        except Exception:
            return
        if not self._events.full():
            self._events.put_nowait((f.kind, payload))

    def _on_error(self, code: int, text: str) -> None:
        if text.startswith(self.name + ": "):
            self.errors.append((code, text[len(self.name) + 2:]))

    def _changed(self) -> None:
        if self._changes.full():
            self._changes.get_nowait()  # drop the oldest: versions only grow
        self._changes.put_nowait(self.mirror.version)

    def _close(self) -> None:
        for remove in self._removers:
            remove()
        self._removers.clear()
        if self._changes.full():
            self._changes.get_nowait()
        self._changes.put_nowait(-1)
        if self._events.full():
            self._events.get_nowait()
        self._events.put_nowait(("", self))
