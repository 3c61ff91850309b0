"""Load side of the ``connections`` scenario: open idle connections at a bounded rate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from bench.clients import Connection, open_idle
from bench.latency import Latency
from bench.procstats import sample_self
from bench.workers import WorkerContext

CLOSE_CONCURRENCY = 200


@dataclass(frozen=True)
class ConnectionsParams:
    count: int
    batch: int
    connect_rate: float
    settle: float


@dataclass(frozen=True)
class ConnectionsShare:
    """One worker's share: ``indices`` (global) at ``rate`` connections/s."""

    params: ConnectionsParams
    indices: tuple[int, ...]
    batch: int
    rate: float


async def run_connections_worker(ctx: WorkerContext) -> dict[str, Any]:
    """``ready``; on ``go`` (t0) connect in paced batches; ``connected``; on ``stop`` close."""
    share: ConnectionsShare = ctx.job.params
    spec = ctx.job.spec
    ctx.ready(None)
    kind, t0 = await ctx.recv()
    if kind != "go":
        raise RuntimeError(f"expected 'go', got {kind!r}")
    conns: list[Connection] = []
    latency = Latency()
    failed = 0
    last_error = ""

    async def one(index: int) -> None:
        nonlocal failed, last_error
        start = time.monotonic_ns()
        try:
            conn = await open_idle(spec, f"bench-idle-{index}")
        except Exception as exc:
            failed += 1
            last_error = f"{type(exc).__name__}: {exc}"
            return
        latency.record_ns(time.monotonic_ns() - start)
        conns.append(conn)

    cpu0 = sample_self()
    first_ns = last_ns = 0
    for b, start in enumerate(range(0, len(share.indices), share.batch)):
        due = int(t0) + int(b * share.batch / share.rate * 1e9)
        delay = due - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        if not first_ns:
            first_ns = time.monotonic_ns()
        await asyncio.gather(*(one(i) for i in share.indices[start : start + share.batch]))
        last_ns = time.monotonic_ns()
        ctx.progress(len(conns))
    cpu1 = sample_self()
    ctx.send("connected", {
        "connected": len(conns),
        "failed": failed,
        "last_error": last_error,
        "first_ns": first_ns,
        "last_ns": last_ns,
        "connect_latency": latency.encode(),
        "cpu_s": cpu1.cpu_s - cpu0.cpu_s,
        "cpu_wall_s": cpu1.t - cpu0.t,
    })
    kind, _ = await ctx.recv()
    if kind != "stop":
        raise RuntimeError(f"expected 'stop', got {kind!r}")
    sem = asyncio.Semaphore(CLOSE_CONCURRENCY)

    async def close(conn: Connection) -> None:
        async with sem:
            with contextlib.suppress(Exception):
                await conn.close()

    await asyncio.gather(*(close(c) for c in conns))
    return {"closed": len(conns)}
