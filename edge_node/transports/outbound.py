"""Per-client send path (the frame sink): protocol bodies in, transport framing added
here, batched per loop tick, bounded.

A :class:`FrameSink` takes protocol-encoded bodies (:meth:`FrameSink.push`) and adds
its transport's framing: :class:`Outbound` the WebSocket header, the QUIC sink
(:class:`edge_node.transports.quic.outbound.QuicOutbound`) a stream record header or a datagram.
Fan-out encodes a message once (msgpack) and, for its WebSocket members, frames it
once too (server frames are unmasked, so the bytes are the same for every member):
sinks with ``framed = True`` also take those shared bytes (:meth:`Outbound.push_framed`).
Frames queued during one event-loop tick are joined and written with one
``transport.write`` per client, which is where most of the per-delivery CPU goes
otherwise.

The queue bound is the sum of our pending bytes and the transport's write
buffer.  Above ``unreliable_drop_bytes`` (the soft limit) unreliable frames are
dropped (the client only wants the newest anyway); above ``send_queue_bytes`` the
client is a slow consumer and is closed with 4001 (reliable messages are never
silently dropped).  That is the ``all`` delivery policy; a member that chose another
one for a room (:mod:`client_sdk.protocol.delivery`) is served by
:meth:`Outbound.push_policy`: over the soft limit its frames of that room are held
(:class:`~edge_node.transports.held.Held`: conflated or dropped oldest first) or the
client is closed at once, and the :class:`Flusher` hands the held frames on once the
queue has drained to half the soft limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Protocol

from client_sdk.protocol import Delivery
from edge_node.transports.held import Held, HeldTally, Tally

__all__ = ["ws_binary_frame", "FrameSink", "Outbound", "Flusher", "TransportLike",
           "POLICY_SNDBUF"]

#: The kernel send buffer (SO_SNDBUF, bytes; Linux doubles it) of a client with a
#: ``latest``/``drop``/``disconnect`` room: small, so that what waits for a slow reader
#: waits in the edge's queue where its policy applies, not in up to 4 MB of kernel
#: buffer (Linux's autotuning limit) that nothing can conflate or drop.
POLICY_SNDBUF = 64 * 1024


def ws_binary_frame(payload: bytes) -> bytes:
    """Return an unmasked, final, binary WebSocket frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    if n < 65536:
        return bytes((0x82, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x82, 127)) + n.to_bytes(8, "big") + payload


class FrameSink(Protocol):
    """One client's send path, as the hub and the session see it."""

    #: True when the sink also takes WebSocket-framed bytes (:meth:`Outbound.push_framed`).
    framed: bool
    closed: bool

    def push(self, body: bytes, reliable: bool = True) -> bool:
        """Queue one protocol-encoded message; False if it was not queued (closed,
        or an unreliable one dropped under backpressure)."""
        ...

    def push_policy(self, data: bytes, reliable: bool, room: str, policy: Delivery,
                    key: str, pos: tuple[int, int]) -> bool:
        """Queue one message of ``room`` under a member's delivery ``policy``
        (:meth:`Outbound.push_policy`)."""
        ...

    def bound_kernel_buffer(self) -> None:
        """The client joined a room with a delivery policy (:data:`POLICY_SNDBUF`)."""
        ...

    def forget_held(self, room: str) -> None:
        """The client left ``room``: drop what is held of it."""
        ...

    def queued_bytes(self) -> int:
        """Bytes waiting for this client."""
        ...

    def flush(self) -> None:
        """Write what is queued now."""
        ...

    def close(self) -> None:
        """Stop accepting messages; what is queued is written first."""
        ...


class TransportLike(Protocol):
    """The subset of :class:`asyncio.WriteTransport` the send path uses."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...


class Flusher:
    """Collects dirty outbounds and flushes them once per event-loop tick, or
    ``write_delay`` seconds after the first frame of a batch when that is set, or
    no sooner than ``write_interval`` seconds after the previous flush.

    Both trade a little latency for CPU: under load each client's frames of several
    ticks go out in one ``write`` (one system call) instead of one each.

    - ``write_delay`` (Centrifugo's ``write_delay``) always waits that long after
      the first frame of a batch.
    - ``write_interval`` waits only when the previous flush was less than that long
      ago: a frame after a quiet interval goes out on the next tick, so light
      traffic gets no added latency and heavy traffic at most ``write_interval``.

    0 for both (the default) writes every tick.  ``write_delay`` wins if both are set.
    """

    __slots__ = ("_dirty", "_last", "_loop", "_scheduled", "_watch_timer", "_watched",
                 "recheck", "tally", "write_delay", "write_interval")

    def __init__(self, loop: asyncio.AbstractEventLoop, write_delay: float = 0.0,
                 write_interval: float = 0.0, tally: HeldTally | None = None) -> None:
        self._loop = loop
        self._dirty: list[Outbound] = []
        self._scheduled = False
        self._last = float("-inf")  # loop time of the previous flush
        self.write_delay = write_delay
        self.write_interval = write_interval
        #: Outbounds holding frames for a slow client, checked every ``recheck`` s.
        self._watched: set[Outbound] = set()
        self._watch_timer: asyncio.TimerHandle | None = None
        self.recheck = 0.01
        #: Where held frames conflated or dropped are counted (the edge's stats).
        self.tally: HeldTally = tally if tally is not None else Tally()

    def watch(self, out: Outbound) -> None:
        """Check ``out`` every :attr:`recheck` seconds until it has released what it
        holds (:meth:`Outbound.release_held` returns True)."""
        self._watched.add(out)
        if self._watch_timer is None:
            self._watch_timer = self._loop.call_later(self.recheck, self._check_watched)

    def _check_watched(self) -> None:
        self._watch_timer = None
        done = [out for out in self._watched if out.release_held()]
        self._watched.difference_update(done)
        if self._watched:
            self._watch_timer = self._loop.call_later(self.recheck, self._check_watched)

    def mark(self, out: Outbound) -> None:
        """Schedule ``out`` for the next flush."""
        self._dirty.append(out)
        if not self._scheduled:
            self._scheduled = True
            if self.write_delay > 0:
                self._loop.call_later(self.write_delay, self.flush)
            elif self.write_interval > 0:
                wait = self._last + self.write_interval - self._loop.time()
                if wait > 0:
                    self._loop.call_later(wait, self.flush)
                else:
                    self._loop.call_soon(self.flush)
            else:
                self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every dirty outbound's pending frames (one write each)."""
        self._scheduled = False
        if self.write_interval > 0:
            self._last = self._loop.time()
        dirty, self._dirty = self._dirty, []
        for out in dirty:
            out.flush()  # never raises: one dying connection must not stall the others


class Outbound:
    """Bounded, batched writer for one client connection: the WebSocket frame sink
    (and the base of the QUIC one)."""

    __slots__ = (
        "_flusher",
        "_held",
        "_on_slow",
        "_pending",
        "_pending_bytes",
        "_transport",
        "bytes_out",
        "closed",
        "dropped",
        "frames_out",
        "limit",
        "soft_limit",
    )

    def __init__(
        self,
        transport: TransportLike,
        flusher: Flusher,
        *,
        limit: int,
        soft_limit: int,
        on_slow: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._flusher = flusher
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._on_slow = on_slow
        self.limit = limit
        self.soft_limit = soft_limit
        self.closed = False
        self.frames_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self._held: Held | None = None

    #: Takes shared WebSocket-framed bytes (:meth:`push_framed`).
    framed = True

    def push(self, body: bytes, reliable: bool = True) -> bool:
        """Queue one protocol-encoded message as a WebSocket binary frame."""
        return self.push_framed(ws_binary_frame(body), reliable)

    def push_framed(self, frame: bytes, reliable: bool = True) -> bool:
        """Queue one pre-framed message; return False if it was not queued.

        A reliable frame that would exceed the queue bound marks the client slow
        (``on_slow`` is called once, later pushes are refused).
        """
        if self.closed:
            return False
        queued = self._pending_bytes + self._transport.get_write_buffer_size()
        if queued > self.soft_limit:
            if not reliable:
                self.dropped += 1
                return False
            if queued + len(frame) > self.limit:
                self._slow()
                return False
        if not self._pending:
            self._flusher.mark(self)
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        return True

    def push_policy(self, data: bytes, reliable: bool, room: str, policy: Delivery,
                    key: str, pos: tuple[int, int]) -> bool:
        """Queue one message of ``room`` for a member whose delivery policy there is
        ``policy`` (not ``all``); ``data`` is what :meth:`_send` takes (the shared
        WebSocket frame here), ``key`` the conflation key, ``pos`` a reliable
        message's position.  False if the message will not reach the client.

        Under the soft limit, and for a held room's reliable messages under
        ``latest``, it is queued as usual.  Over it: ``disconnect`` closes the client
        (``on_slow``); ``latest`` and ``drop`` hold the message (:class:`Held`) until
        the queue drains, and the room's next messages wait behind it.
        """
        if self.closed:
            return False
        held = self._held
        if held is None or not held.holds(room):
            if not self.backed_up():
                return self._send(data, reliable)
            if policy is Delivery.DISCONNECT:
                self._slow()
                return False
            if reliable and policy is Delivery.LATEST:
                return self._send(data, reliable)
            if held is None:
                held = self._held = Held(self.soft_limit, self._flusher.tally)
            self._flusher.watch(self)
        elif reliable and policy is Delivery.LATEST:
            return self._send(data, reliable)
        held.hold(room, policy, data, reliable, key, pos)
        return True

    def bound_kernel_buffer(self) -> None:
        """Cap the connection's kernel send buffer at :data:`POLICY_SNDBUF` (once a
        member has a delivery policy; best effort: a transport without a socket keeps
        its own)."""
        extra = getattr(self._transport, "get_extra_info", None)
        sock = extra("socket") if extra is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, POLICY_SNDBUF)

    def backed_up(self) -> bool:
        """True while the client is slower than its messages: the queue is above the
        soft limit."""
        return self._queued() > self.soft_limit

    def release_held(self) -> bool:
        """Hand held frames on once the queue has drained to half the soft limit (as many
        as the sink takes now: :meth:`_release`); True when nothing is held any more (or
        the client is gone)."""
        held = self._held
        if self.closed or self._transport.is_closing() or held is None:
            return True
        if not self.drained():
            return not held.rooms
        return held.release(self._release, self.push)

    def drained(self) -> bool:
        """True once the queue is down to half the soft limit (held frames may go)."""
        return self._queued() <= self.soft_limit // 2

    def forget_held(self, room: str) -> None:
        """The client left ``room``: what is held of it will not be sent."""
        if self._held is not None:
            self._held.forget(room)

    def held_counts(self) -> tuple[int, int]:
        """(conflated, dropped) messages of this client's ``latest``/``drop`` rooms."""
        h = self._held
        return (0, 0) if h is None else (h.conflated, h.dropped)

    def _send(self, data: bytes, reliable: bool) -> bool:
        """Queue ``data`` as the fan-out hands it to this sink (a WebSocket frame)."""
        return self.push_framed(data, reliable)

    def _release(self, data: bytes, reliable: bool) -> bool:
        """Queue a held frame: an unreliable one too, though the frames released
        before it may take the queue over the soft limit again (they were held to be
        sent; ``held`` bounds them)."""
        if reliable or self.closed:
            return self.push_framed(data, reliable)
        if not self._pending:
            self._flusher.mark(self)
        self._pending.append(data)
        self._pending_bytes += len(data)
        return True

    def _slow(self) -> None:
        self.closed = True
        self._pending.clear()
        self._pending_bytes = 0
        self._on_slow()

    def queued_bytes(self) -> int:
        """Bytes waiting for this client: ours plus the transport's write buffer."""
        if self.closed or self._transport.is_closing():
            return 0
        return self._queued()

    def _queued(self) -> int:
        return self._pending_bytes + self._transport.get_write_buffer_size()

    def flush(self) -> None:
        """Write pending frames now (called by the :class:`Flusher`)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        n = self._pending_bytes
        self._pending_bytes = 0
        if self.closed or self._transport.is_closing():
            return
        try:
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        except (RuntimeError, OSError):
            # The connection is closing (e.g. write_eof already called): nothing
            # more can reach this client; its session is being cleaned up.
            self.closed = True
            return
        self.frames_out += len(pending)
        self.bytes_out += n

    def close(self) -> None:
        """Stop accepting frames; pending frames are flushed first."""
        self.flush()
        self.closed = True
