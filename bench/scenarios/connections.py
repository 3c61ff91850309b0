"""The ``connections`` scenario: memory per idle connection and connect rate.

The parent samples the server's RSS with no client connected, lets the load processes
open ``--count`` idle connections in paced batches, waits ``--settle`` seconds, and
samples again: ``memory.bytes_per_connection = (RSS_after - RSS_before) / connected``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import psutil

from bench.errors import BenchError, BenchFailure
from bench.latency import Latency
from bench.procstats import LOADGEN_SATURATION_PERCENT, ProcSample, cpu_between, sample
from bench.progress import Progress
from bench.runner import RunOptions, TargetSession, run_all, split
from bench.scenarios.connections_load import (
    ConnectionsParams,
    ConnectionsShare,
    run_connections_worker,
)
from bench.workers import WorkerJob, WorkerPool

START_DELAY_S = 0.2
#: Issue 8's target for one idle WebSocket connection on the edge.
MEMORY_TARGET_BYTES = 30 * 1024

RATIO_FIGURES = (
    "memory.bytes_per_connection",
    "connections.connect_rate_per_s",
    "connections.connect_latency_us.p50",
    "connections.connect_latency_us.p99",
    "server.cpu_us_per_connect",
)

ROWS: list[tuple[str, str]] = [
    ("connections opened", "connections.connected"),
    ("failed", "connections.failed"),
    ("memory per connection, bytes", "memory.bytes_per_connection"),
    ("memory per connection, KiB", "memory.kib_per_connection"),
    ("server RSS before, MiB", "memory.rss_before_mib"),
    ("server RSS after, MiB", "memory.rss_after_mib"),
    ("connect rate /s", "connections.connect_rate_per_s"),
    ("connect latency p50 µs", "connections.connect_latency_us.p50"),
    ("connect latency p99 µs", "connections.connect_latency_us.p99"),
    ("connect latency max µs", "connections.connect_latency_us.max"),
    ("server CPU µs per connect", "server.cpu_us_per_connect"),
    ("load generator max CPU % (one process)", "loadgen.cpu_percent_max"),
]


def validate(p: ConnectionsParams, procs: int) -> None:
    if p.count < 1:
        raise BenchError("--count must be at least 1")
    if procs < 1 or procs > p.count:
        raise BenchError("--procs must be between 1 and --count")


def run_connections(params: ConnectionsParams, options: RunOptions) -> dict[str, Any]:
    """Run the scenario for every target and run; return the report document."""
    validate(params, options.procs)

    def once(session: TargetSession, progress: Progress) -> dict[str, Any]:
        return run_once(session, params, options.procs, progress)

    return run_all("connections", asdict(params), options, once, RATIO_FIGURES)


def run_once(
    session: TargetSession, p: ConnectionsParams, procs: int, progress: Progress
) -> dict[str, Any]:
    parts = split(range(p.count), procs)
    per_batch = max(1, -(-p.batch // procs))
    jobs = [
        WorkerJob(
            i, run_connections_worker, session.target.spec,
            ConnectionsShare(p, part, per_batch, p.connect_rate / procs), session.load_cpus,
        )
        for i, part in enumerate(parts)
    ]
    pool = WorkerPool(jobs)

    def tick() -> None:
        progress.update(lambda: f"connected={pool.progress():,}/{p.count:,}")

    try:
        pool.start()
        pool.recv_all("ready", 60.0, on_wait=lambda: progress.update("starting…"))
        before = sample(session.proc)
        pool.send_all("go", time.monotonic_ns() + int(START_DELAY_S * 1e9))
        connected = pool.recv_all("connected", p.count / p.connect_rate + 120.0, on_wait=tick)
        deadline = time.monotonic() + p.settle
        while time.monotonic() < deadline:
            tick()
            time.sleep(0.05)
        after = sample(session.proc)
        pool.send_all("stop")
        pool.recv_all("result", 120.0, on_wait=lambda: progress.update("closing…"))
    except psutil.Error as exc:
        raise BenchFailure(f"the {session.kind} server died during the run: {exc}") from exc
    finally:
        pool.close()
    return assemble(p, before, after, connected)


def assemble(
    p: ConnectionsParams, before: ProcSample, after: ProcSample, parts: list[dict[str, Any]]
) -> dict[str, Any]:
    n = sum(int(r["connected"]) for r in parts)
    failed = sum(int(r["failed"]) for r in parts)
    if n == 0:
        last = next((r["last_error"] for r in parts if r["last_error"]), "")
        raise BenchFailure(f"no connection could be opened (last error: {last})")
    lat = Latency()
    for r in parts:
        lat.merge_encoded(r["connect_latency"])
    starts = [r["first_ns"] for r in parts if r["first_ns"]]
    ends = [r["last_ns"] for r in parts if r["last_ns"]]
    span_s = (max(ends) - min(starts)) / 1e9 if starts and ends else 0.0
    cpu_s, _ = cpu_between(before, after)
    per_conn = (after.rss - before.rss) / n if n else 0.0
    load_pcts = [100.0 * r["cpu_s"] / r["cpu_wall_s"] if r["cpu_wall_s"] else 0.0 for r in parts]
    out: dict[str, Any] = {
        "connections": {
            "requested": p.count,
            "connected": n,
            "failed": failed,
            "connect_s": round(span_s, 3),
            "connect_rate_per_s": round(n / span_s, 1) if span_s else 0.0,
            "connect_latency_us": lat.summary(),
        },
        "memory": {
            "rss_before_bytes": before.rss,
            "rss_after_bytes": after.rss,
            "rss_before_mib": round(before.rss / 2**20, 1),
            "rss_after_mib": round(after.rss / 2**20, 1),
            "bytes_per_connection": round(per_conn),
            "kib_per_connection": round(per_conn / 1024, 2),
        },
        "server": {
            "cpu_s": round(cpu_s, 3),
            "cpu_us_per_connect": round(cpu_s / n * 1e6, 1) if n else 0.0,
        },
        "loadgen": {
            "procs": len(parts),
            "cpu_percent_max": round(max(load_pcts), 1),
            "cpu_percent_per_proc": [round(x, 1) for x in load_pcts],
        },
        "histograms": {"connect_latency": lat.encode()},
    }
    warns: list[str] = []
    if failed:
        last = next((r["last_error"] for r in parts if r["last_error"]), "")
        warns.append(f"{failed} of {p.count} connections failed (last: {last})")
    for i, pct in enumerate(load_pcts):
        if pct > LOADGEN_SATURATION_PERCENT:
            warns.append(
                f"load process {i} used {pct:.0f}% of a core while connecting: the connect "
                "rate may be bounded by the load generator"
            )
    out["warnings"] = warns
    return out
