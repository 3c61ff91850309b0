"""Send path of a QUIC client (its frame sink): reliable messages as stream records,
unreliable ones as datagrams.

The hub hands a QUIC member the protocol-encoded body (no WebSocket framing); it goes

* on the session stream as a length-prefixed record if it is reliable, or if it
  is unreliable but too large for a datagram (aioquic would never send an
  oversize datagram and would block every later one behind it);
* otherwise as one QUIC datagram, through a bounded queue that drops the
  oldest (stalest) update first.

Members with a ``latest``, ``drop`` or ``disconnect`` delivery policy
(:meth:`Outbound.push_policy`) count a datagram backlog (half of aioquic's queue
bound, or more, waiting for the congestion window) as being slow, as well as a full
stream.

Frames queued in one loop tick are written together, then one ``transmit``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from client_sdk.transport.records import RECORD_HEADER
from edge_node.transports.outbound import Flusher, Outbound

__all__ = ["DatagramSink", "QuicOutbound"]


class DatagramSink(Protocol):
    """The QUIC connection as seen by :class:`QuicOutbound`."""

    def write(self, data: bytes) -> None: ...  # to the session stream
    def get_write_buffer_size(self) -> int: ...  # stream bytes not yet acknowledged
    def is_closing(self) -> bool: ...
    def send_datagram(self, data: bytes) -> bool: ...  # False if dropped
    def datagrams_waiting(self) -> int: ...  # in aioquic's queue, not yet sent
    def transmit(self) -> None: ...


class QuicOutbound(Outbound):
    """:class:`Outbound` for a QUIC connection (same bounds, same slow-consumer rule).

    ``max_datagram`` is the largest payload sent as a datagram; ``datagram_queue``
    bounds the datagrams waiting for the next flush (oldest dropped first).
    """

    __slots__ = (
        "_dgram_slow",
        "_dgrams",
        "_sink",
        "datagrams_dropped",
        "datagrams_out",
        "max_datagram",
    )

    #: Takes protocol bodies only (its framing is a record header or a datagram).
    framed = False

    def __init__(self, sink: DatagramSink, flusher: Flusher, *, limit: int, soft_limit: int,
                 on_slow: Callable[[], None], max_datagram: int, datagram_queue: int) -> None:
        super().__init__(sink, flusher, limit=limit, soft_limit=soft_limit, on_slow=on_slow)
        self._sink = sink
        self._dgrams: deque[bytes] = deque(maxlen=max(1, datagram_queue))
        self._dgram_slow = max(1, datagram_queue // 2)
        self.max_datagram = max_datagram
        self.datagrams_out = 0
        self.datagrams_dropped = 0

    def push(self, body: bytes, reliable: bool = True) -> bool:
        """Queue one protocol-encoded message (see :meth:`Outbound.push_framed` for the
        bounds and the slow-consumer rule)."""
        if self.closed:
            return False
        payload = body
        n = len(payload)
        if not reliable and n <= self.max_datagram:
            q = self._dgrams
            if len(q) == q.maxlen:
                self.datagrams_dropped += 1  # the deque drops the oldest
            elif not q:
                self._flusher.mark(self)
            q.append(payload)
            return True
        return self.push_framed(n.to_bytes(RECORD_HEADER, "big") + payload, reliable)

    def _send(self, data: bytes, reliable: bool) -> bool:
        """Queue ``data`` as the fan-out hands it to this sink (a protocol body)."""
        return self.push(data, reliable)

    def _release(self, data: bytes, reliable: bool) -> bool:
        """Queue a held body; False, leaving it held, for a datagram while the datagram
        backlog is at the slow mark again (released into it, the queue would drop the
        oldest uncounted)."""
        if (not reliable and len(data) <= self.max_datagram
                and self._backlog() >= self._dgram_slow):
            return False
        return self.push(data, reliable)

    def _backlog(self) -> int:
        """Datagrams not yet sent: ours for the next flush, and aioquic's."""
        return len(self._dgrams) + self._sink.datagrams_waiting()

    def bound_kernel_buffer(self) -> None:
        """Nothing to bound: the datagram backlog and the stream's unacknowledged bytes
        are the edge's own (one UDP socket serves every client)."""

    def backed_up(self) -> bool:
        """Slow: the stream's queue is above the soft limit, or datagrams wait for the
        congestion window (half the datagram queue or more)."""
        return (super().backed_up()
                or self._backlog() >= self._dgram_slow)

    def drained(self) -> bool:
        """The stream's queue is down to half the soft limit and the datagram backlog
        to a quarter of the datagram queue."""
        return (super().drained()
                and self._backlog() <= self._dgram_slow // 2)

    def flush(self) -> None:
        """Write pending records, send queued datagrams, then transmit once."""
        q = self._dgrams
        if not (self._pending or q):
            return  # marked twice in one tick (a datagram, then a record)
        super().flush()
        if q:
            if self.closed or self._sink.is_closing():
                q.clear()
                return
            sink = self._sink
            while q:
                if sink.send_datagram(q.popleft()):
                    self.datagrams_out += 1
                else:
                    self.datagrams_dropped += 1
        if not self.closed:
            self._sink.transmit()
