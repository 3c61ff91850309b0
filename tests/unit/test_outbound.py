"""The per-client send path: batching, bounds, policies, dying connections (logic only)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from edge_node.transports.outbound import Flusher, Outbound, ws_binary_frame


class FakeTransport:
    """Records writes; can pretend to be backed up or half-closed."""

    def __init__(self, buffered: int = 0, fail: bool = False) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered
        self.fail = fail

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("Cannot call write() after write_eof()")
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


def test_ws_frame_lengths() -> None:
    big = b"\x82\x7f" + (65536).to_bytes(8, "big")
    for n, header in ((0, b"\x82\x00"), (125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"),
                      (65535, b"\x82\x7e\xff\xff"), (65536, big)):
        frame = ws_binary_frame(b"x" * n)
        assert frame.startswith(header) and len(frame) == len(header) + n


async def test_frames_of_one_tick_go_out_in_one_write() -> None:
    flusher = Flusher(asyncio.get_running_loop())
    t = FakeTransport()
    out = Outbound(t, flusher, limit=10_000, soft_limit=5_000, on_slow=lambda: None)
    for i in range(3):
        assert out.push_framed(bytes([i]))
    assert t.writes == []
    await asyncio.sleep(0)
    assert t.writes == [b"\x00\x01\x02"]
    assert out.frames_out == 3


async def test_a_body_is_framed_by_the_sink_and_a_shared_frame_is_written_as_is() -> None:
    flusher = Flusher(asyncio.get_running_loop())
    t = FakeTransport()
    out = Outbound(t, flusher, limit=10_000, soft_limit=5_000, on_slow=lambda: None)
    assert out.framed
    out.push(b"body")
    frame = ws_binary_frame(b"shared")
    out.push_framed(frame)
    await asyncio.sleep(0)
    assert t.writes == [ws_binary_frame(b"body") + frame]


async def test_one_dying_connection_does_not_stall_the_others() -> None:
    flusher = Flusher(asyncio.get_running_loop())
    dead, alive = FakeTransport(fail=True), FakeTransport()
    o1 = Outbound(dead, flusher, limit=10_000, soft_limit=5_000, on_slow=lambda: None)
    o2 = Outbound(alive, flusher, limit=10_000, soft_limit=5_000, on_slow=lambda: None)
    o1.push_framed(b"a")
    o2.push_framed(b"b")
    await asyncio.sleep(0)
    assert alive.writes == [b"b"]
    assert o1.closed and not o1.push(b"again")
    o2.push_framed(b"c")  # the healthy client keeps being served
    await asyncio.sleep(0)
    assert alive.writes == [b"b", b"c"]


async def test_slow_consumer_policy() -> None:
    flusher = Flusher(asyncio.get_running_loop())
    slow: list[bool] = []
    t = FakeTransport(buffered=6_000)
    out = Outbound(t, flusher, limit=10_000, soft_limit=5_000, on_slow=lambda: slow.append(True))
    assert not out.push_framed(b"u" * 10, reliable=False)  # over the soft limit: newest
    assert out.dropped == 1 and not slow                   # value dropped, client kept
    assert out.push_framed(b"r" * 100)                     # reliable fits under the bound
    t.buffered = 9_990
    assert not out.push_framed(b"r" * 100)                 # over the bound: slow consumer
    assert slow == [True] and out.closed


@pytest.mark.parametrize("limit", [0, 1])
async def test_closed_outbound_refuses(limit: int) -> None:
    flusher = Flusher(asyncio.get_running_loop())
    out = Outbound(FakeTransport(), flusher, limit=100 + limit, soft_limit=50,
                   on_slow=lambda: None)
    out.close()
    assert not out.push(b"x")


class ManualLoop:
    """The three loop calls a :class:`Flusher` makes, on a clock the test moves.

    With the real loop these timing tests depended on the machine: a stall of
    20-50 ms between two loop ticks (a loaded CI host, a GC pause) let a delay or an
    interval run out early.  Here time passes only in :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._n = 0

    def time(self) -> float:
        return self.now

    def call_soon(self, cb: Callable[[], None]) -> None:
        self.call_later(0.0, cb)

    def call_later(self, delay: float, cb: Callable[[], None]) -> None:
        self._n += 1
        self._timers.append((self.now + delay, self._n, cb))

    def tick(self) -> None:
        """One loop iteration without time passing: run what is due now."""
        due = sorted(t for t in self._timers if t[0] <= self.now)
        self._timers = [t for t in self._timers if t[0] > self.now]
        for _when, _n, cb in due:
            cb()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (tick by tick, in steps of at most 1 ms)."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + 0.001)
            self.tick()


def test_write_delay_joins_frames_of_several_ticks() -> None:
    """With a write delay, frames pushed over several loop ticks leave in one write,
    after the delay, in order; without it each tick writes its own."""
    for delay, writes in ((0.02, 1), (0.0, 3)):
        loop = ManualLoop()
        t = FakeTransport()
        out = Outbound(t, Flusher(loop, write_delay=delay),  # type: ignore[arg-type]
                       limit=1 << 20, soft_limit=1 << 16, on_slow=lambda: None)
        for k in range(3):
            out.push(bytes([k]))  # the sink adds the WebSocket framing
            loop.tick()  # one loop tick
            loop.tick()
        if delay:
            assert t.writes == []  # nothing before the delay
            loop.advance(delay - 0.001)
            assert t.writes == []  # not even just before it
        loop.advance(delay + 0.05)
        assert len(t.writes) == writes
        assert b"".join(t.writes) == b"".join(ws_binary_frame(bytes([k])) for k in range(3))


def test_write_interval_writes_at_once_after_quiet_and_joins_under_load() -> None:
    """With a write interval the first frame after a quiet interval leaves on the next
    tick; frames pushed within the interval after a write wait and leave together."""
    loop = ManualLoop()
    t = FakeTransport()
    out = Outbound(t, Flusher(loop, write_interval=0.05),  # type: ignore[arg-type]
                   limit=1 << 20, soft_limit=1 << 16, on_slow=lambda: None)
    frames = [ws_binary_frame(bytes([k])) for k in range(4)]
    out.push_framed(frames[0])
    loop.tick()
    assert t.writes == [frames[0]]  # quiet before: no wait
    for f in frames[1:]:
        loop.advance(0.01)
        out.push_framed(f)
        loop.tick()
    assert t.writes == [frames[0]]  # within the interval (30 ms after the write): held
    loop.advance(0.019)
    assert t.writes == [frames[0]]  # 49 ms after the write: still held
    loop.advance(0.002)
    assert t.writes == [frames[0], b"".join(frames[1:])]  # 50 ms: leave together
    loop.advance(0.06)  # quiet again
    out.push_framed(frames[0])
    loop.tick()
    assert len(t.writes) == 3
