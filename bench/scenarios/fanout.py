"""The ``fanout`` scenario: one room, S subscribers, P publishers, total rate R.

The parent starts the target, spreads the clients over ``--procs`` load processes,
gives them a common start time, samples the server's CPU over the measurement window
(after the warm-up), then merges what the load processes counted.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import psutil

from bench.errors import BenchError, BenchFailure
from bench.latency import Latency
from bench.pacing import HEADER_SIZE, Schedule
from bench.procstats import (
    LOADGEN_SATURATION_PERCENT,
    OTHER_CPU_WARN_PERCENT,
    ProcSample,
    cpu_between,
    sample,
    system_cpu,
)
from bench.progress import Progress
from bench.runner import RunOptions, TargetSession, run_all, split
from bench.scenarios.fanout_load import FanoutParams, FanoutShare, run_fanout_worker
from bench.workers import WorkerJob, WorkerPool

CONNECT_TIMEOUT_S = 120.0
START_DELAY_S = 0.3
#: The SDK's receive path should sustain this rate on one core (issue 8).
RECEIVE_PATH_TARGET_PER_S = 120_000
#: Below this many receipts/s the load generator's CPU is mostly idle overhead.
RECEIVE_PATH_MIN_RATE = 5_000
SERVER_SATURATION_PERCENT = 90.0
SEND_LAG_WARN_US = 5_000

RATIO_FIGURES = (
    "server.cpu_us_per_delivery",
    "server.cpu_percent",
    "latency_us.p50",
    "latency_us.p99",
    "latency_us.p99_9",
    "service_latency_us.p50",
    "service_latency_us.p99",
    "throughput.delivered_per_s",
)

ROWS: list[tuple[str, str]] = [
    ("offered deliveries/s", "throughput.offered_deliveries_per_s"),
    ("delivered/s (window)", "throughput.delivered_per_s"),
    ("latency p50 µs (from intended send)", "latency_us.p50"),
    ("latency p90 µs", "latency_us.p90"),
    ("latency p99 µs", "latency_us.p99"),
    ("latency p99.9 µs", "latency_us.p99_9"),
    ("latency max µs", "latency_us.max"),
    ("service latency p50 µs (from actual send)", "service_latency_us.p50"),
    ("service latency p99 µs", "service_latency_us.p99"),
    ("send lag p99 µs (load generator timer)", "send_lag_us.p99"),
    ("server CPU µs per delivery", "server.cpu_us_per_delivery"),
    ("server CPU % of a core", "server.cpu_percent"),
    ("server RSS MiB", "server.rss_mib"),
    ("redis CPU % of a core", "redis.cpu_percent"),
    ("messages sent", "messages.sent"),
    ("lost", "messages.lost"),
    ("duplicates", "messages.duplicates"),
    ("load generator max CPU % (one process)", "loadgen.cpu_percent_max"),
    ("load generator CPU µs per receipt", "loadgen.cpu_us_per_receipt"),
    ("other processes' CPU % (host noise)", "host.other_cpu_percent"),
]


def validate(p: FanoutParams, procs: int) -> None:
    """Raise :class:`BenchError` for impossible parameters."""
    if p.subscribers < 1:
        raise BenchError("--subscribers must be at least 1")
    if p.publishers < 1:
        raise BenchError("--publishers must be at least 1")
    if p.rate <= 0:
        raise BenchError("--rate must be positive")
    if p.payload_size < HEADER_SIZE:
        raise BenchError(f"--payload-size must be at least {HEADER_SIZE} bytes (the header)")
    if p.duration <= 0 or p.warmup < 0 or p.warmup >= p.duration:
        raise BenchError("need --duration > --warmup >= 0")
    if p.drain < 0:
        raise BenchError("--drain must not be negative")
    if int(p.duration * p.rate) < 1:
        raise BenchError("--rate x --duration must give at least one message")
    if procs < 1 or procs > p.subscribers + p.publishers:
        raise BenchError("--procs must be between 1 and subscribers + publishers")


def run_fanout(params: FanoutParams, options: RunOptions) -> dict[str, Any]:
    """Run the scenario for every target and run; return the report document."""
    validate(params, options.procs)

    def once(session: TargetSession, progress: Progress) -> dict[str, Any]:
        return run_once(session, params, options.procs, progress)

    return run_all("fanout", asdict(params), options, once, RATIO_FIGURES)


def _wait_until(t_ns: int, tick: Any) -> None:
    while (left := t_ns - time.monotonic_ns()) > 0:
        tick()
        time.sleep(min(0.1, left / 1e9))


def run_once(
    session: TargetSession, p: FanoutParams, procs: int, progress: Progress
) -> dict[str, Any]:
    subs = split(range(p.subscribers), procs)
    pubs = split(range(p.publishers), procs)
    jobs = [
        WorkerJob(
            i, run_fanout_worker, session.target.spec,
            FanoutShare(p, subs[i], pubs[i]), session.load_cpus,
        )
        for i in range(procs)
        if subs[i] or pubs[i]
    ]
    pool = WorkerPool(jobs)
    live = psutil.Process(session.target.pid)
    live.cpu_percent()

    def line() -> str:
        elapsed = (time.monotonic_ns() - t0) / 1e9 if t0 else 0.0
        return (
            f"t={max(0.0, elapsed):.1f}/{p.duration:g}s received={pool.progress():,} "
            f"server cpu={live.cpu_percent():.0f}%"
        )

    def tick() -> None:
        progress.update(line)

    t0 = 0
    try:
        pool.start()
        pool.recv_all(
            "ready", CONNECT_TIMEOUT_S, on_wait=lambda: progress.update("connecting…")
        )
        t0 = time.monotonic_ns() + int(START_DELAY_S * 1e9)
        pool.send_all("go", t0)
        schedule = Schedule(t0, p.rate, p.publishers, p.duration, p.warmup)
        _wait_until(schedule.window_start_ns, tick)
        host0, self0 = system_cpu(), time.process_time()
        server0 = sample(session.proc)
        helpers0 = {role: sample(h) for role, h in session.helpers.items()}
        _wait_until(schedule.end_ns, tick)
        server1 = sample(session.proc)
        helpers1 = {role: sample(h) for role, h in session.helpers.items()}
        host1, self1 = system_cpu(), time.process_time()
        results = pool.recv_all("result", p.drain + 60.0, on_wait=tick)
    except psutil.Error as exc:
        raise BenchFailure(f"the {session.kind} server died during the run: {exc}") from exc
    finally:
        pool.close()
    out = assemble(session.kind, p, schedule, results, (server0, server1), helpers0, helpers1)
    host = {k: host1[k] - host0[k] for k in host0}
    host_figures(out, host, self1 - self0, results, server1.t - server0.t)
    return out


def host_figures(
    out: dict[str, Any],
    host: dict[str, float],
    parent_cpu_s: float,
    results: list[dict[str, Any]],
    wall_s: float,
) -> None:
    """Add ``host`` figures: how busy the machine was, and how much of it was not us."""
    if wall_s <= 0:
        return
    ours = out["server"]["cpu_s"] + parent_cpu_s + sum(float(r["cpu_s"]) for r in results)
    for helper in ("redis", "origin"):
        ours += float(out.get(helper, {}).get("cpu_s", 0.0))
    other_pct = max(0.0, 100.0 * (host["task"] - ours) / wall_s)
    out["host"] = {
        "task_percent": round(100.0 * host["task"] / wall_s, 1),
        "other_cpu_percent": round(other_pct, 1),
        "irq_percent": round(100.0 * host["irq"] / wall_s, 1),
        "steal_percent": round(100.0 * host["steal"] / wall_s, 1),
    }
    if other_pct > OTHER_CPU_WARN_PERCENT:
        out["warnings"].append(
            f"processes outside the benchmark used {other_pct:.0f}% of a core during the "
            "window: the host was not quiet, figures are noisy"
        )
    if out["host"]["steal_percent"] > OTHER_CPU_WARN_PERCENT:
        out["warnings"].append(
            f"the hypervisor took {out['host']['steal_percent']:.0f}% of a core (steal): "
            "figures are noisy"
        )


def assemble(
    kind: str,
    p: FanoutParams,
    schedule: Schedule,
    results: list[dict[str, Any]],
    server: tuple[ProcSample, ProcSample],
    helpers0: dict[str, ProcSample],
    helpers1: dict[str, ProcSample],
) -> dict[str, Any]:
    """Merge the load processes' counts with the server samples into one run result."""

    def total(key: str) -> int:
        return sum(int(r[key]) for r in results)

    hists = {name: Latency() for name in ("latency", "service_latency", "send_lag")}
    for r in results:
        for name, hist in hists.items():
            hist.merge_encoded(r[name])
    window_s = schedule.window_s
    sent = total("sent")
    expected = sent * p.subscribers
    unique = total("unique")
    window_receipts = total("window_receipts")
    server_deliveries = window_receipts + total("publisher_window_receipts")
    cpu_s, cpu_pct = cpu_between(*server)
    per_delivery = cpu_s / server_deliveries * 1e6 if server_deliveries else 0.0
    load_pcts = [
        100.0 * r["cpu_s"] / r["cpu_wall_s"] if r["cpu_wall_s"] else 0.0 for r in results
    ]
    load_cpu = sum(float(r["cpu_s"]) for r in results)
    receipts_window = window_receipts + total("publisher_window_receipts")
    out: dict[str, Any] = {
        "throughput": {
            "offered_deliveries_per_s": p.rate * p.subscribers,
            "delivered_per_s": round(window_receipts / window_s, 1),
            "deliveries_window": window_receipts,
            "window_s": window_s,
        },
        "messages": {
            "sent": sent,
            "expected": expected,
            "delivered": unique,
            "lost": expected - unique,
            "duplicates": total("duplicates"),
            "invalid": total("invalid"),
            "publish_acked": total("publish_acked"),
            "publish_errors": total("publish_errors"),
            "publisher_receipts": total("publisher_receipts"),
            "disconnected_clients": total("disconnected"),
        },
        "latency_us": hists["latency"].summary(),
        "service_latency_us": hists["service_latency"].summary(),
        "send_lag_us": hists["send_lag"].summary(),
        "server": {
            "cpu_s": round(cpu_s, 4),
            "cpu_percent": round(cpu_pct, 1),
            "cpu_us_per_delivery": round(per_delivery, 2),
            "deliveries_window": server_deliveries,
            "rss_bytes": server[1].rss,
            "rss_mib": round(server[1].rss / 2**20, 1),
        },
        "loadgen": {
            "procs": len(results),
            "cpu_percent_max": round(max(load_pcts), 1),
            "cpu_percent_total": round(sum(load_pcts), 1),
            "cpu_us_per_receipt": round(load_cpu / receipts_window * 1e6, 2)
            if receipts_window
            else 0.0,
            "cpu_percent_per_proc": [round(x, 1) for x in load_pcts],
        },
        "histograms": {name: h.encode() for name, h in hists.items()},
    }
    for role, before in helpers0.items():
        h_cpu, h_pct = cpu_between(before, helpers1[role])
        out[role] = {
            "cpu_s": round(h_cpu, 4),
            "cpu_percent": round(h_pct, 1),
            "cpu_us_per_delivery": round(h_cpu / server_deliveries * 1e6, 2)
            if server_deliveries
            else 0.0,
            "rss_bytes": helpers1[role].rss,
        }
    out["warnings"] = _warnings(kind if p.receiver == "sdk" else "lean", out, results,
                                lossy=p.transport == "quic-datagram")
    return out


def _warnings(kind: str, out: dict[str, Any], results: list[dict[str, Any]],
              lossy: bool = False) -> list[str]:
    """Warnings of one run; ``lossy``: its messages were unreliable (loss allowed)."""
    warns: list[str] = []
    msgs = out["messages"]
    if msgs["lost"]:
        allowed = " (unreliable QUIC datagrams: loss is allowed)" if lossy else ""
        warns.append(f"{msgs['lost']} of {msgs['expected']} deliveries lost{allowed}")
    if msgs["duplicates"]:
        warns.append(f"{msgs['duplicates']} duplicate deliveries")
    if msgs["disconnected_clients"]:
        warns.append(
            f"{msgs['disconnected_clients']} clients were disconnected by the end of the run"
        )
    if msgs["invalid"]:
        warns.append(f"{msgs['invalid']} messages with an unreadable payload")
    if msgs["publish_errors"]:
        last = next((r["publish_last_error"] for r in results if r["publish_last_error"]), "")
        warns.append(f"{msgs['publish_errors']} publish errors (last: {last})")
    for i, pct in enumerate(out["loadgen"]["cpu_percent_per_proc"]):
        if pct > LOADGEN_SATURATION_PERCENT:
            warns.append(
                f"load process {i} used {pct:.0f}% of a core: the load generator, not the "
                "server, may be the bottleneck (add --procs, lower the rate)"
            )
    per_receipt = out["loadgen"]["cpu_us_per_receipt"]
    busy = out["throughput"]["delivered_per_s"] >= RECEIVE_PATH_MIN_RATE
    if (kind.startswith("edge") and busy and per_receipt
            and 1e6 / per_receipt < RECEIVE_PATH_TARGET_PER_S):
        warns.append(
            f"the SDK load generator spends {per_receipt:.1f} µs CPU per received message "
            f"(~{1e6 / per_receipt:,.0f} msg/s per core, below the "
            f"{RECEIVE_PATH_TARGET_PER_S:,}/s target for the receive path)"
        )
    if out["server"]["cpu_percent"] > SERVER_SATURATION_PERCENT:
        warns.append(
            f"server at {out['server']['cpu_percent']:.0f}% of a core: saturated, latency "
            "includes queueing"
        )
    lag = out["send_lag_us"]["p99"]
    if lag > SEND_LAG_WARN_US:
        warns.append(
            f"publishers fell behind their schedule (send lag p99 {lag / 1000:.1f} ms): "
            "the load generator is overloaded"
        )
    return warns
