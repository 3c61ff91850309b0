"""Open-loop publish schedule and the benchmark payload.

The schedule is fixed before the run: message ``i`` (``0 <= i < total``) is due at
``t0 + i / rate`` and belongs to publisher ``i % publishers``. Latency is measured
from that *intended* time, so a sender that falls behind shows up as latency instead
of silently lowering the offered rate (no coordinated omission).

All times are ``time.monotonic_ns()`` values, which on Linux are comparable across
processes of one machine (CLOCK_MONOTONIC is system-wide).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: publisher index, sequence number, intended send time (ns), actual send time (ns).
HEADER = struct.Struct("<IIqq")
HEADER_SIZE = HEADER.size


@dataclass(frozen=True)
class Schedule:
    """The intended send times of every message of a run."""

    t0_ns: int
    rate: float
    publishers: int
    duration_s: float
    warmup_s: float

    @property
    def total(self) -> int:
        """Number of messages the whole run publishes."""
        return int(self.duration_s * self.rate)

    @property
    def end_ns(self) -> int:
        return self.t0_ns + int(self.duration_s * 1e9)

    @property
    def window_start_ns(self) -> int:
        """Start of the measurement window (after the warm-up)."""
        return self.t0_ns + int(self.warmup_s * 1e9)

    @property
    def window_s(self) -> float:
        return self.duration_s - self.warmup_s

    def intended_ns(self, i: int) -> int:
        """Intended send time of global message ``i``."""
        return self.t0_ns + int(i * 1e9 / self.rate)

    def count_for(self, publisher: int) -> int:
        """Number of messages publisher ``publisher`` sends in the run."""
        total = self.total
        if publisher >= total:
            return 0
        return (total - 1 - publisher) // self.publishers + 1

    def in_window(self, intended_ns: int) -> bool:
        return self.window_start_ns <= intended_ns < self.end_ns

    def max_seq(self) -> int:
        """Upper bound (exclusive) of any publisher's sequence numbers."""
        return self.count_for(0)


class PayloadMaker:
    """Builds ``size``-byte payloads: the header, then zero padding."""

    def __init__(self, size: int) -> None:
        if size < HEADER_SIZE:
            raise ValueError(f"payload size must be at least {HEADER_SIZE} bytes")
        self._padding = bytes(size - HEADER_SIZE)

    def make(self, publisher: int, seq: int, intended_ns: int, sent_ns: int) -> bytes:
        return HEADER.pack(publisher, seq, intended_ns, sent_ns) + self._padding


def read_payload(payload: bytes) -> tuple[int, int, int, int]:
    """Return ``(publisher, seq, intended_ns, sent_ns)``; raise ``struct.error`` if too short."""
    return HEADER.unpack_from(payload)
