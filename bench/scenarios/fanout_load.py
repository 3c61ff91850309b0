"""Load side of the ``fanout`` scenario: one worker's subscribers and publishers."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass
from typing import Any

from bench.clients import Connection, Publisher, open_publisher, open_subscriber
from bench.latency import Latency
from bench.pacing import HEADER, PayloadMaker, Schedule
from bench.procstats import sample_self
from bench.workers import WorkerContext

CONNECT_CONCURRENCY = 50


@dataclass(frozen=True)
class FanoutParams:
    subscribers: int
    publishers: int
    rate: float
    payload_size: int
    duration: float
    warmup: float
    drain: float
    #: Subscribers on edge targets: "sdk" (the public SDK) or "lean" (bench.lean_client).
    receiver: str = "sdk"
    #: Edge targets: "ws", "quic-stream" (reliable publishes on the QUIC stream) or
    #: "quic-datagram" (unreliable publishes, delivered as QUIC datagrams: loss allowed).
    transport: str = "ws"


@dataclass(frozen=True)
class FanoutShare:
    """The part of the clients one worker runs (global indices)."""

    params: FanoutParams
    subscribers: tuple[int, ...]
    publishers: tuple[int, ...]


class _Counts:
    """Everything the subscribers of one worker count, shared by their callbacks."""

    def __init__(self, max_seq: int, publishers: int, expected: int) -> None:
        self.max_seq = max_seq
        self.publishers = publishers
        #: Messages each subscriber should get; ``all_complete`` is set once all have.
        self.expected = expected
        self.complete = 0
        self.all_complete = asyncio.Event()
        self.receipts = 0
        self.unique = 0
        self.duplicates = 0
        self.invalid = 0
        self.window_receipts = 0
        self.pub_receipts = 0
        self.pub_window_receipts = 0
        self.latency = Latency()
        self.service = Latency()
        self.send_lag = Latency()
        self.per_sub_unique: list[int] = []
        self.window: tuple[int, int] = (0, 0)

    def subscriber(self) -> Any:
        """Return the ``on_payload`` callback of a new subscriber."""
        slot = len(self.per_sub_unique)
        self.per_sub_unique.append(0)
        seen = bytearray(self.max_seq * self.publishers)
        max_seq, publishers = self.max_seq, self.publishers
        unpack = HEADER.unpack_from
        per_sub = self.per_sub_unique
        record_lat = self.latency.record_ns
        record_svc = self.service.record_ns

        def on_payload(payload: bytes, recv_ns: int) -> None:
            self.receipts += 1
            try:
                pub, seq, intended, sent = unpack(payload)
            except struct.error:
                self.invalid += 1
                return
            if pub >= publishers or seq >= max_seq:
                self.invalid += 1
                return
            idx = pub * max_seq + seq
            if seen[idx]:
                self.duplicates += 1
            else:
                seen[idx] = 1
                self.unique += 1
                per_sub[slot] += 1
                if per_sub[slot] == self.expected:
                    self.complete += 1
                    if self.complete == len(per_sub):
                        self.all_complete.set()
            start, end = self.window
            if start <= intended < end:
                self.window_receipts += 1
                record_lat(recv_ns - intended)
                record_svc(recv_ns - sent)

        return on_payload

    def publisher_receipt(self, own: int) -> Any:
        """Callback for what a publisher receives (others' messages; its own is ignored)."""
        unpack = HEADER.unpack_from

        def on_payload(payload: bytes, recv_ns: int) -> None:
            try:
                pub, _seq, intended, _sent = unpack(payload)
            except struct.error:
                self.invalid += 1
                return
            if pub == own:
                return
            self.pub_receipts += 1
            start, end = self.window
            if start <= intended < end:
                self.pub_window_receipts += 1

        return on_payload


async def _bounded(coros: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def _sleep_until(t_ns: int) -> None:
    delay = t_ns - time.monotonic_ns()
    if delay > 0:
        await asyncio.sleep(delay / 1e9)


async def run_fanout_worker(ctx: WorkerContext) -> dict[str, Any]:
    """Connect, say ``ready``, wait for ``go`` (t0), run the schedule, return the counts."""
    share: FanoutShare = ctx.job.params
    p = share.params
    spec = ctx.job.spec
    # The counts do not depend on t0: compute them from a schedule at t0 = 0.
    plan = Schedule(0, p.rate, p.publishers, p.duration, p.warmup)
    counts = _Counts(max(1, plan.max_seq()), p.publishers, plan.total)

    t_connect = time.monotonic()
    subs: list[Connection] = await _bounded(
        [open_subscriber(spec, f"bench-sub-{i}", counts.subscriber(), p.receiver, p.transport)
         for i in share.subscribers],
        CONNECT_CONCURRENCY,
    )
    pubs: list[Publisher] = await _bounded(
        [
            open_publisher(spec, f"bench-pub-{i}", counts.publisher_receipt(i), p.transport)
            for i in share.publishers
        ],
        CONNECT_CONCURRENCY,
    )
    ctx.ready({"connect_s": time.monotonic() - t_connect})

    kind, t0 = await ctx.recv()
    if kind != "go":
        raise RuntimeError(f"expected 'go', got {kind!r}")
    schedule = Schedule(int(t0), p.rate, p.publishers, p.duration, p.warmup)
    counts.window = (schedule.window_start_ns, schedule.end_ns)
    sent = [0] * len(share.publishers)
    sent_window = [0] * len(share.publishers)
    maker = PayloadMaker(p.payload_size)

    async def publish(slot: int, pub_index: int, pub: Publisher) -> None:
        record_lag = counts.send_lag.record_ns
        for seq in range(schedule.count_for(pub_index)):
            intended = schedule.intended_ns(pub_index + seq * p.publishers)
            now = time.monotonic_ns()
            if intended > now:
                await asyncio.sleep((intended - now) / 1e9)
                now = time.monotonic_ns()
            await pub.send(maker.make(pub_index, seq, intended, now))
            sent[slot] += 1
            if schedule.in_window(intended):
                sent_window[slot] += 1
                record_lag(now - intended)

    async def report_progress() -> None:
        while True:
            ctx.progress(counts.receipts)
            await asyncio.sleep(0.25)

    cpu: dict[str, float] = {}

    async def measure_cpu() -> None:
        await _sleep_until(schedule.window_start_ns)
        a = sample_self()
        await _sleep_until(schedule.end_ns)
        b = sample_self()
        cpu["cpu_s"] = b.cpu_s - a.cpu_s
        cpu["wall_s"] = b.t - a.t

    progress_task = asyncio.create_task(report_progress())
    cpu_task = asyncio.create_task(measure_cpu())
    await asyncio.gather(
        *(
            publish(slot, i, pub)
            for slot, (i, pub) in enumerate(zip(share.publishers, pubs, strict=True))
        )
    )
    await cpu_task
    # Drain: wait until every local subscriber has every message, or the deadline.
    left = schedule.end_ns + int(p.drain * 1e9) - time.monotonic_ns()
    if counts.per_sub_unique:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counts.all_complete.wait(), max(0.0, left / 1e9))
    # Acks still in flight would fail as "client closed": give them until the deadline.
    left_s = max(0.1, (schedule.end_ns + int(p.drain * 1e9) - time.monotonic_ns()) / 1e9)
    await asyncio.gather(*(pub.settle(left_s) for pub in pubs))
    progress_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await progress_task
    ctx.progress(counts.receipts)

    disconnected = sum(1 for c in [*subs, *pubs] if not c.is_open())
    await asyncio.gather(*(c.close() for c in [*subs, *pubs]), return_exceptions=True)
    errors = [pub.last_error for pub in pubs if pub.last_error]
    return {
        "subscribers": len(share.subscribers),
        "publishers": len(share.publishers),
        "sent": sum(sent),
        "sent_window": sum(sent_window),
        "publish_acked": sum(pub.acked for pub in pubs),
        "publish_errors": sum(pub.errors for pub in pubs),
        "publish_last_error": errors[0] if errors else "",
        "disconnected": disconnected,
        "receipts": counts.receipts,
        "unique": counts.unique,
        "duplicates": counts.duplicates,
        "invalid": counts.invalid,
        "window_receipts": counts.window_receipts,
        "publisher_receipts": counts.pub_receipts,
        "publisher_window_receipts": counts.pub_window_receipts,
        "latency": counts.latency.encode(),
        "service_latency": counts.service.encode(),
        "send_lag": counts.send_lag.encode(),
        "cpu_s": cpu.get("cpu_s", 0.0),
        "cpu_wall_s": cpu.get("wall_s", 0.0),
    }
