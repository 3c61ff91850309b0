"""Load side of the cluster scenarios (``rooms``, ``telemetry``, ``storm``, ``failover
--load``): SDK clients spread over the edges of a local cluster.

A :class:`ClusterPlan` lists every client: its home edge, its room, whether it
receives the room's messages and which publisher index it has (if any). Every
publisher sends at the same rate ``hz`` on one open-loop schedule (:class:`Schedule`
with ``publishers`` = all publishers of the plan): message ``g`` is due at
``t0 + g / (hz * publishers)`` and belongs to publisher ``g mod publishers``. A
publisher publishes only in its own room. Payloads carry ``(publisher, seq, intended
ns)`` (``<IIq``), padded to ``payload_size``.

A worker returns raw observations, merged and analysed by the parent
(:mod:`bench.scenarios.cluster_figures`): per delivery ``(client, receive ns,
latency ns)``; per receiving client a 0/1 byte map of the ``(publisher, seq)`` it
saw and its duplicates; per publisher byte maps of what it sent and what was
acknowledged (reliable); when each client was served again after the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from array import array
from dataclasses import dataclass
from typing import Any

from bench.pacing import Schedule
from bench.procstats import sample_self
from bench.workers import WorkerContext

PAYLOAD = struct.Struct("<IIq")
CONNECT_CONCURRENCY = 50


@dataclass(frozen=True)
class ClientSpec:
    """One client of the plan. ``publisher`` is its publisher index, or -1."""

    idx: int
    home: int
    room: str
    receives: bool
    publisher: int = -1
    kind: str = "player"


@dataclass(frozen=True)
class ClusterPlan:
    """Everything the load processes need (pickled to them)."""

    urls: tuple[str, ...]
    secret: bytes
    clients: tuple[ClientSpec, ...]
    publishers: int
    hz: float
    duration: float
    warmup: float
    drain: float
    payload_size: int
    reliable: bool
    #: After the fault: wait at most this long for every affected client to be back.
    settle: float = 10.0
    ping: float = 1.0

    def schedule(self, t0_ns: int) -> Schedule:
        return Schedule(t0_ns, self.hz * max(1, self.publishers), max(1, self.publishers),
                        self.duration, self.warmup)

    def room_publishers(self) -> dict[str, list[int]]:
        """Publisher indices per room."""
        out: dict[str, list[int]] = {}
        for c in self.clients:
            if c.publisher >= 0:
                out.setdefault(c.room, []).append(c.publisher)
        return out


@dataclass(frozen=True)
class ClusterShare:
    """One worker's clients (indices into ``plan.clients``) and its connect pace
    (new connections/s; 0: only bounded by ``CONNECT_CONCURRENCY``)."""

    plan: ClusterPlan
    indices: tuple[int, ...]
    connect_pace: float = 0.0


class _Live:
    """A connected client and what it saw."""

    def __init__(self, spec: ClientSpec, pubs: list[int], max_seq: int) -> None:
        self.spec = spec
        self.client: Any = None
        self.seen = {p: bytearray(max_seq) for p in pubs if p != spec.publisher}
        self.unique = 0
        self.dups = 0
        self.invalid = 0
        self.served_ns = 0
        #: Index in ``plan.urls`` of the edge the client was on when the run started.
        self.start_edge = -1


def _token(secret: bytes, name: str, kind: str) -> str:
    from client_sdk.protocol import mint_token

    # Service tokens are exempt from per-connection rate limits.
    return mint_token(secret, name, kind, ["*"], now=time.time(), ttl=3600)


class _Recorder:
    """Per-delivery arrays shared by every receiver of a worker."""

    def __init__(self) -> None:
        self.client = array("I")
        self.recv = array("q")
        self.lat = array("q")
        self.receipts = 0
        self.complete = 0
        self.all_complete = asyncio.Event()

    def callback(self, live: _Live, expected: int, receivers: int) -> Any:
        unpack = PAYLOAD.unpack_from
        now_ns = time.monotonic_ns
        add_c, add_r, add_l = self.client.append, self.recv.append, self.lat.append
        seen = live.seen
        ci = live.spec.idx

        def on_message(m: Any) -> None:
            now = now_ns()
            self.receipts += 1
            try:
                pub, seq, intended = unpack(m.payload)
                bm = seen[pub]
                if bm[seq]:
                    live.dups += 1
                    return
            except (struct.error, KeyError, IndexError):
                live.invalid += 1
                return
            bm[seq] = 1
            add_c(ci)
            add_r(now)
            add_l(now - intended)
            live.unique += 1
            if live.unique == expected:
                self.complete += 1
                if self.complete == receivers:
                    self.all_complete.set()

        return on_message


async def run_cluster_worker(ctx: WorkerContext) -> dict[str, Any]:
    """Connect this worker's clients, say ``ready``, run the schedule on ``go``."""
    from client_sdk import connect

    share: ClusterShare = ctx.job.params
    plan = share.plan
    mine = [plan.clients[i] for i in share.indices]
    max_seq = max(1, plan.schedule(0).max_seq())
    by_room = plan.room_publishers()
    rec = _Recorder()
    lives = [_Live(s, by_room.get(s.room, []) if s.receives else [], max_seq) for s in mine]
    plan_sched = plan.schedule(0)
    receivers = [lv for lv in lives if lv.seen]
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    fault = {"ns": 0}

    def served(lv: _Live) -> Any:
        def cb(_c: Any) -> None:
            if fault["ns"] and not lv.served_ns and time.monotonic_ns() >= fault["ns"]:
                lv.served_ns = time.monotonic_ns()
        return cb

    t_start = time.monotonic()

    async def open_one(k: int, lv: _Live) -> None:
        s = lv.spec
        urls = [plan.urls[s.home], *(u for i, u in enumerate(plan.urls) if i != s.home)]
        if share.connect_pace:
            # Stay under the edges' connection-rate limit while setting up.
            await asyncio.sleep(max(0.0, t_start + k / share.connect_pace - time.monotonic()))
        async with sem:
            lv.client = await connect(
                urls, _token(plan.secret, f"c{s.idx}", s.kind), name=f"c{s.idx}",
                ping_interval=plan.ping, ping_timeout=plan.ping, backoff_base=0.2,
                backoff_cap=2.0, rtt_probe_interval=None)
        lv.client.on_reconnect = served(lv)
        lv.client.on_handoff = served(lv)
        on_message = None
        if lv.seen:
            expected = sum(plan_sched.count_for(p) for p in lv.seen)
            on_message = rec.callback(lv, expected, len(receivers))
            if expected == 0:
                rec.complete += 1
        await lv.client.join(s.room, echo=False, on_message=on_message)

    t_connect = time.monotonic()
    try:
        await asyncio.gather(*(open_one(k, lv) for k, lv in enumerate(lives)))
        if rec.complete == len(receivers):
            rec.all_complete.set()
        for lv in lives:
            lv.start_edge = plan.urls.index(lv.client.url) if lv.client.url in plan.urls else -1
        ctx.ready({"connect_s": time.monotonic() - t_connect})
        kind, go = await ctx.recv()
        if kind != "go":
            raise RuntimeError(f"expected 'go', got {kind!r}")
        fault["ns"] = int(go["fault_ns"])
        return await _run(ctx, plan, lives, receivers, rec, int(go["t0"]), max_seq,
                          fault["ns"])
    finally:
        await asyncio.gather(*(lv.client.close() for lv in lives if lv.client is not None),
                             return_exceptions=True)


async def _run(ctx: WorkerContext, plan: ClusterPlan, lives: list[_Live],
               receivers: list[_Live], rec: _Recorder, t0: int,
               max_seq: int, fault_ns: int) -> dict[str, Any]:
    schedule = plan.schedule(t0)
    pubs = sorted((lv.spec.publisher, lv) for lv in lives if lv.spec.publisher >= 0)
    sent = {p: bytearray(max_seq) for p, _ in pubs}
    acked = {p: bytearray(max_seq) for p, _ in pubs}
    errors: dict[str, Any] = {"n": 0, "last": ""}
    pending = {"n": 0}
    settled = asyncio.Event()
    settled.set()
    padding = bytes(max(0, plan.payload_size - PAYLOAD.size))
    pack = PAYLOAD.pack

    def on_ack(p: int, seq: int) -> Any:
        def done(f: asyncio.Future[Any]) -> None:
            pending["n"] -= 1
            if pending["n"] == 0:
                settled.set()
            if f.cancelled() or f.exception() is not None:
                errors["n"] += 1
                errors["last"] = "cancelled" if f.cancelled() else repr(f.exception())
            else:
                acked[p][seq] = 1
        return done

    async def publish_all() -> None:
        n_pub = max(1, plan.publishers)
        for seq in range(schedule.max_seq()):
            for p, lv in pubs:
                g = seq * n_pub + p
                if g >= schedule.total:
                    break
                intended = schedule.intended_ns(g)
                delay = intended - time.monotonic_ns()
                if delay > 0:
                    await asyncio.sleep(delay / 1e9)
                try:
                    fut = lv.client.publish_nowait(lv.spec.room, pack(p, seq, intended) + padding,
                                                   reliable=plan.reliable)
                except Exception as exc:  # not connected (unreliable), outbox full, closed
                    errors["n"] += 1
                    errors["last"] = f"{type(exc).__name__}: {exc}"
                    continue
                sent[p][seq] = 1
                if fut is not None:
                    pending["n"] += 1
                    settled.clear()
                    fut.add_done_callback(on_ack(p, seq))

    cpu: dict[str, float] = {}

    async def measure_cpu() -> None:
        await asyncio.sleep(max(0.0, (schedule.window_start_ns - time.monotonic_ns()) / 1e9))
        a = sample_self()
        await asyncio.sleep(max(0.0, (schedule.end_ns - time.monotonic_ns()) / 1e9))
        b = sample_self()
        cpu["cpu_s"], cpu["wall_s"] = b.cpu_s - a.cpu_s, b.t - a.t

    async def measure_recovery() -> None:
        """This process's CPU from the fault until its clients of edge 1 are all
        served again (or publishing ends): is the load generator the bottleneck of
        the recovery?"""
        if not fault_ns:
            return
        await asyncio.sleep(max(0.0, (fault_ns - time.monotonic_ns()) / 1e9))
        a = sample_self()
        hit = [lv for lv in lives if lv.start_edge == 0]
        while any(not lv.served_ns for lv in hit) and \
                time.monotonic_ns() < schedule.end_ns:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        b = sample_self()
        cpu["recovery_cpu_s"], cpu["recovery_wall_s"] = b.cpu_s - a.cpu_s, b.t - a.t

    async def progress() -> None:
        while True:
            ctx.progress(rec.receipts)
            await asyncio.sleep(0.25)

    prog = asyncio.create_task(progress())
    try:
        await asyncio.gather(publish_all(), measure_cpu(), measure_recovery())
        end = schedule.end_ns + int(plan.drain * 1e9)
        # Late messages (and after a fault: resumes, replays) until complete or deadline.
        if plan.reliable:
            end += int(plan.settle * 1e9)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                _all_done(rec, receivers, settled, plan.reliable),
                max(0.0, (end - time.monotonic_ns()) / 1e9))
        if not plan.reliable or not receivers:
            # Unreliable messages may be lost for good: wait the drain out (bounded).
            await asyncio.sleep(max(0.0, (schedule.end_ns + int(plan.drain * 1e9)
                                          - time.monotonic_ns()) / 1e9))
    finally:
        prog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await prog
    ctx.progress(rec.receipts)
    clients = []
    for lv in lives:
        c = lv.client
        bad = [ev for ev in c.recoveries if not ev.recovered]
        clients.append({
            "idx": lv.spec.idx, "start_edge": lv.start_edge, "served_ns": lv.served_ns,
            "dups": lv.dups,
            "invalid": lv.invalid, "unique": lv.unique, "reconnects": c.reconnects,
            "handoffs": c.handoffs, "recovered_false": len(bad),
            "reasons": [ev.reason for ev in bad], "connected": bool(c.connected),
        })
    return {
        "clients": clients,
        "seen": {lv.spec.idx: {p: bytes(b) for p, b in lv.seen.items()} for lv in receivers},
        "sent": {p: bytes(b) for p, b in sent.items()},
        "acked": {p: bytes(b) for p, b in acked.items()},
        "publish_errors": errors["n"],
        "publish_last_error": errors["last"],
        "d_client": rec.client.tobytes(),
        "d_recv": rec.recv.tobytes(),
        "d_lat": rec.lat.tobytes(),
        "receipts": rec.receipts,
        "cpu_s": cpu.get("cpu_s", 0.0),
        "cpu_wall_s": cpu.get("wall_s", 0.0),
        "recovery_cpu_s": cpu.get("recovery_cpu_s", 0.0),
        "recovery_wall_s": cpu.get("recovery_wall_s", 0.0),
    }


async def _all_done(rec: _Recorder, receivers: list[_Live], settled: asyncio.Event,
                    reliable: bool) -> None:
    if reliable:
        await settled.wait()
    if receivers:
        await rec.all_complete.wait()
