"""Load side of ``bench functions``: one process's SDK clients calling the edges.

A worker lives for the whole run and plays the phases the parent sends, one after
the other.  For each ``("phase", Phase)`` it connects its clients (client ``i`` to
``urls[i mod len(urls)]``), says ``ready``, waits for ``("go", (window_start_ns,
end_ns))`` (``time.monotonic_ns`` values: one clock for every process of the host),
then keeps ``in_flight`` requests outstanding on every client (closed loop: a request
is sent as soon as the previous one of its slot is answered) until ``end_ns``, closes
its clients and answers ``("phase_result", counts)``.  ``("stop", None)`` ends it.

A request is ``client.rpc(function, args)`` (mode ``rpc``) or ``client.ping()`` (mode
``ping``: a PING answered by a PONG, the cheapest round trip of the protocol).  Only
requests *answered* inside the window (``window_start_ns <= t < end_ns``) count; their
latencies go into an HDR histogram.  A failed request is counted by exception type
and its slot pauses 10 ms (so a lost link cannot spin the loop).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.latency import Latency
from bench.workers import WorkerContext

__all__ = ["Phase", "run_functions_worker"]

CONNECT_CONCURRENCY = 32
ERROR_PAUSE_S = 0.01


@dataclass(frozen=True)
class Phase:
    """One measured phase as one worker plays it."""

    #: Request kind: ``"rpc"`` or ``"ping"``.
    mode: str
    #: The edges' URLs (``ws://`` or ``quic://``) the phase's clients are spread over.
    urls: tuple[str, ...]
    #: Global indices of this worker's clients (client ``i`` goes to ``urls[i mod n]``).
    clients: tuple[int, ...]
    in_flight: int
    #: The RPC and its arguments (mode ``rpc``).
    function: str = "echo"
    args: Any = None
    secret: bytes = b""
    #: CA file of the edges' throw-away certificate (QUIC).
    ca_file: str = ""


async def run_functions_worker(ctx: WorkerContext) -> dict[str, Any]:
    """Play phases until the parent says ``stop``; return how many were played."""
    played = done = 0
    while True:
        kind, data = await ctx.recv()
        if kind == "stop":
            return {"phases": played}
        if kind != "phase" or not isinstance(data, Phase):
            raise RuntimeError(f"expected a phase or 'stop', got {kind!r}")
        result = await _play(ctx, data, done)
        done += int(result["requests_total"])
        ctx.send("phase_result", result)
        played += 1


async def _connect(phase: Phase) -> list[Any]:
    from client_sdk import connect
    from client_sdk.protocol import mint_token
    from client_sdk.transport import TlsOptions

    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tls = TlsOptions(ca_file=phase.ca_file or None)

    async def one(i: int) -> Any:
        # kind service: exempt from the per-connection rate limits; rpc: every function.
        tok = mint_token(phase.secret, f"fbench-{i}", "service", ["*"], rpc=["*"],
                         now=time.time(), ttl=3600)
        async with gate:
            return await connect([phase.urls[i % len(phase.urls)]], tok,
                                 name=f"fbench-{i}", reconnect=False, tls=tls,
                                 ping_interval=None, rtt_probe_interval=None)

    return list(await asyncio.gather(*(one(i) for i in phase.clients)))


async def _play(ctx: WorkerContext, phase: Phase, done_before: int) -> dict[str, Any]:
    """One phase (see the module docstring); the progress counter goes on from
    ``done_before`` (requests answered in the earlier phases)."""
    clients = await _connect(phase)
    ctx.ready({"clients": len(clients)})
    kind, data = await ctx.recv()
    if kind != "go":
        raise RuntimeError(f"expected 'go', got {kind!r}")
    window_start, end = int(data[0]), int(data[1])
    latency = Latency()
    counts = {"window": 0, "total": 0}
    errors: Counter[str] = Counter()
    clock = time.monotonic_ns

    async def slot(client: Any) -> None:
        request = (client.ping if phase.mode == "ping" else
                   lambda: client.rpc(phase.function, phase.args))
        while (t0 := clock()) < end:
            try:
                await request()
            except Exception as exc:  # counted and reported, the slot goes on
                errors[type(exc).__name__] += 1
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            t1 = clock()
            counts["total"] += 1
            if window_start <= t1 < end:
                counts["window"] += 1
                latency.record_ns(t1 - t0)

    async def report_progress() -> None:
        while True:
            ctx.progress(done_before + counts["total"])
            await asyncio.sleep(0.25)

    progress = asyncio.create_task(report_progress())
    try:
        await asyncio.gather(*(slot(c) for c in clients for _ in range(phase.in_flight)))
    finally:
        progress.cancel()
        ctx.progress(done_before + counts["total"])
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"clients": len(clients), "requests_window": counts["window"],
            "requests_total": counts["total"], "errors": dict(errors),
            "latency": latency.encode()}
