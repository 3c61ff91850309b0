"""``telemetry --path device``: devices send TELEMETRY frames (batches of samples)
through one edge's IoT pipeline to the origin.

Every device is a :class:`client_sdk.device.Device` on the edge, sending ``--batch``
samples per frame on one open-loop schedule per load process (sample ``g`` of a
process is due at ``t0 + g / rate``, device ``g mod n``; its device time is the
intended send time).  The edge validates and aggregates them in windows of
``--iot-window-ms`` and sends each closed window up as one ``rollup`` entry holding
per-batch pieces; the origin counts every sample once (``iot.samples``).

Figures: samples sent and acknowledged (a TELEMETRY_ACK means the window holding the
sample is durable in Redis), samples the origin counted, the edge→origin lag of the
uplink entries applied since the start of the window (``origin.lag_ms``: the edge's
submit of a rollup to the origin's apply, Redis clock), the CPU of the edge, Redis,
the origin and each load process, and the host's other CPU.  The uplink carries one
entry per device and window here (not one per sample): ``--path room`` and
``python -m bench.uplink_bench lag`` measure an uplink entry per sample.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import psutil

from bench import report
from bench.procstats import (
    LOADGEN_SATURATION_PERCENT,
    ProcSample,
    can_pin,
    system_cpu,
)
from bench.progress import Progress
from bench.runner import LOAD_CPUS
from bench.scenarios.cluster import (
    ORIGIN_WAIT_S,
    ClusterOptions,
    _cpu,
    _sample_all,
    edge_runs_report,
    running_cluster,
)
from bench.scenarios.fanout import host_figures
from bench.targets import TargetSpec
from bench.workers import WorkerContext, WorkerJob, WorkerPool

__all__ = ["DevicePlan", "DEVICE_ROWS", "run_devices"]

CONNECT_CONCURRENCY = 50
MAX_LINGER_S = 1.0
START_DELAY_S = 0.5
METRIC = "v"

DEVICE_ROWS: list[tuple[str, str]] = [
    ("offered samples/s", "throughput.offered_samples_per_s"),
    ("samples sent", "messages.sent"),
    ("samples acknowledged", "messages.acked"),
    ("samples counted at the origin", "origin.samples"),
    ("acknowledged but not counted", "origin.missing"),
    ("edge→origin lag p50 ms (rollup entries)", "origin.lag_ms.p50"),
    ("edge→origin lag p90 ms", "origin.lag_ms.p90"),
    ("edge→origin lag p99 ms", "origin.lag_ms.p99"),
    ("edge→origin lag p99.9 ms", "origin.lag_ms.p99.9"),
    ("uplink entries applied in the window", "origin.lag_entries"),
    ("load generator max send lag ms", "loadgen.send_lag_ms_max"),
    ("edge CPU % of a core", "server.cpu_percent"),
    ("redis CPU %", "redis.cpu_percent"),
    ("origin CPU % (workers + API)", "origin.cpu_percent"),
    ("load generator max CPU % (one process)", "loadgen.cpu_percent_max"),
    ("load generator CPU µs per sample", "loadgen.cpu_us_per_sample"),
    ("other processes' CPU % (host noise)", "host.other_cpu_percent"),
]


@dataclass(frozen=True)
class DevicePlan:
    """What every load process needs (pickled to them)."""

    url: str
    secret: bytes
    devices: int
    rate: float
    batch: int
    duration: float
    warmup: float
    drain: float


@dataclass(frozen=True)
class DeviceShare:
    """One load process's devices (indices) of the plan."""

    plan: DevicePlan
    indices: tuple[int, ...]


async def run_device_worker(ctx: WorkerContext) -> dict[str, Any]:
    """Connect this process's devices, say ``ready``, send on ``go``, report counts."""
    from client_sdk.device import Device
    from client_sdk.protocol import mint_token

    share: DeviceShare = ctx.job.params
    plan = share.plan
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    # A device's batch goes when full or after ``linger``: long enough to fill it at
    # the device's own rate, at most MAX_LINGER_S (1,000 devices at 20 samples/s each
    # send 20 samples per frame, not one).
    linger = min(MAX_LINGER_S, plan.batch * plan.devices / plan.rate)

    async def open_one(i: int) -> Device:
        async with sem:
            tok = mint_token(plan.secret, f"tele-dev-{i}", "device", [f"tele-dev-{i}"],
                             now=time.time(), ttl=3600)
            return await Device.connect(plan.url, tok, name=f"tele-dev-{i}",
                                        batch_max=plan.batch, linger=linger,
                                        resend_after=60.0)

    devs = list(await asyncio.gather(*(open_one(i) for i in share.indices)))
    try:
        ctx.ready({"devices": len(devs)})
        kind, go = await ctx.recv()
        if kind != "go":
            raise RuntimeError(f"expected 'go', got {kind!r}")
        return await _send_all(ctx, plan, devs, int(go["t0"]))
    finally:
        await asyncio.gather(*(d.close() for d in devs), return_exceptions=True)


async def _send_all(ctx: WorkerContext, plan: DevicePlan, devs: list[Any],
                    t0: int) -> dict[str, Any]:
    rate = plan.rate * len(devs) / plan.devices  # this process's share
    total = int(rate * plan.duration)
    n = len(devs)
    t0_wall_ms = time.time_ns() // 1_000_000 + (t0 - time.monotonic_ns()) // 1_000_000
    sent = 0
    worst = 0
    while sent < total:
        now = time.monotonic_ns()
        due = min(total, int((now - t0) * rate / 1e9))
        if due > sent:
            # Open loop: overdue samples go at once, stamped with their intended time.
            worst = max(worst, now - (t0 + int(sent * 1e9 / rate)))
            for g in range(sent, due):
                devs[g % n].send_telemetry(METRIC, 20.0 + (g % 13) * 0.5,
                                           t0_wall_ms + int(g * 1000 / rate))
            sent = due
            ctx.progress(sent)
        await asyncio.sleep(0.001)
    for d in devs:
        await d.flush()
    deadline = time.monotonic() + plan.drain + 10.0
    for d in devs:  # bounded: the acks of the last windows come when they close
        if not await d.wait_acked(max(0.0, deadline - time.monotonic())):
            break
    return {"sent": sum(d.sent_samples for d in devs),
            "acked": sum(d.acked_samples for d in devs),
            "dropped": sum(d.dropped for d in devs),
            "send_lag_ms_max": round(worst / 1e6, 1)}


def run_devices(plan_args: dict[str, Any], opts: ClusterOptions, window_ms: int
                ) -> dict[str, Any]:
    """Run ``opts.runs`` fresh one-edge clusters with the origin; the report document."""
    warnings: list[str] = []
    pinned = opts.pin and can_pin()
    if opts.pin and not pinned:
        warnings.append("--pin ignored: CPUs 0 and 1 are not both available to this process")
    params = {**plan_args, "path": "device", "iot_window_ms": window_ms, "edges": 1,
              "procs": opts.procs, "runs": opts.runs, "pin": pinned}
    meta = report.make_meta("telemetry", params, report.timestamp())
    return edge_runs_report(
        meta, warnings, opts, "telemetry devices",
        lambda progress: _run_once(plan_args, opts, window_ms, pinned, progress))


def _run_once(p: dict[str, Any], opts: ClusterOptions, window_ms: int, pinned: bool,
              progress: Progress) -> dict[str, Any]:
    edge_args = ["--connect-rate", str(opts.connect_rate), "--iot-window-ms", str(window_ms)]
    with running_cluster(1, edge_args, True, pinned) as (cluster, procs):
        plan = DevicePlan(cluster.urls[0], cluster.secret, p["devices"], p["rate"], p["batch"],
                          p["duration"], p["warmup"], p["drain"])
        return _drive(cluster, plan, procs, opts, pinned, progress)


def _drive(cluster: Any, plan: DevicePlan, procs: dict[str, Any], opts: ClusterOptions,
           pinned: bool, progress: Progress) -> dict[str, Any]:
    from bench.scenarios.cluster import _origin_stats
    from origin.view import lag_quantiles

    nprocs = max(1, min(opts.procs, plan.devices))
    spec = TargetSpec("edge", plan.url, plan.secret)
    jobs = [WorkerJob(i, run_device_worker, spec,
                      DeviceShare(plan, tuple(range(i, plan.devices, nprocs))),
                      LOAD_CPUS if pinned else None) for i in range(nprocs)]
    pool = WorkerPool(jobs)
    everyone = [*procs["edges"], *procs["redis"], *procs["origin"]]
    loads: list[psutil.Process] = []
    s0: dict[int, ProcSample] = {}
    s1: dict[int, ProcSample] = {}
    try:
        pool.start()
        # Sampled here, not by the load processes themselves: one behind its schedule
        # would sample itself late.
        loads += [psutil.Process(pid) for pid in pool.pids]
        everyone += loads
        pool.recv_all("ready", 180.0,
                      on_wait=lambda: progress.update(f"connecting {plan.devices} devices…"))
        t0 = time.monotonic_ns() + int(START_DELAY_S * 1e9)
        pool.send_all("go", {"t0": t0})
        win0, end = t0 + int(plan.warmup * 1e9), t0 + int(plan.duration * 1e9)

        def line() -> str:
            return (f"t={max(0.0, (time.monotonic_ns() - t0) / 1e9):.1f}/{plan.duration:g}s "
                    f"samples={pool.progress():,}")

        while (left := win0 - time.monotonic_ns()) > 0:
            progress.update(line)
            time.sleep(min(0.05, left / 1e9))
        host0, self0 = system_cpu(), time.process_time()
        _sample_all(everyone, s0)
        lag0 = _origin_stats(cluster.redis_url)["lag_buckets"]
        while (left := end - time.monotonic_ns()) > 0:
            progress.update(line)
            time.sleep(min(0.05, left / 1e9))
        _sample_all(everyone, s1)
        host1, self1 = system_cpu(), time.process_time()
        results = pool.recv_all("result", plan.drain + 60.0, on_wait=lambda: progress.update(line))
    finally:
        pool.close()
    wall = (end - win0) / 1e9
    sent = sum(int(r["sent"]) for r in results)
    acked = sum(int(r["acked"]) for r in results)
    st = _origin_stats(cluster.redis_url, sent, count=lambda st: int(st["iot"]["samples"]))
    buckets = {b: n - lag0.get(b, 0) for b, n in st["lag_buckets"].items()}
    buckets = {b: n for b, n in buckets.items() if n > 0}
    counted = int(st["iot"]["samples"])
    out: dict[str, Any] = {
        "throughput": {"offered_samples_per_s": plan.rate, "window_s": round(wall, 3)},
        "messages": {"sent": sent, "acked": acked,
                     "dropped_by_devices": sum(int(r["dropped"]) for r in results)},
        "origin": {"samples": counted, "missing": max(0, acked - counted),
                   "extra": max(0, counted - sent), "lag_ms": lag_quantiles(buckets),
                   "lag_entries": sum(buckets.values()),
                   "rollups": int(st["by_kind"].get("rollup", 0)),
                   "duplicates_ignored": int(st["duplicates_ignored"]),
                   "catch_up_s": round(float(st["waited_s"]), 2)},
        "warnings": [],
    }
    e_cpu, _, e_rss = _cpu(procs["edges"], s0, s1)
    out["server"] = {"edges": 1, "cpu_s": round(e_cpu, 4),
                     "cpu_percent": round(100.0 * e_cpu / wall, 1), "rss_bytes": e_rss}
    for role in ("redis", "origin"):
        r_cpu, _, r_rss = _cpu(procs[role], s0, s1)
        out[role] = {**out.get(role, {}), "cpu_s": round(r_cpu, 4),
                     "cpu_percent": round(100.0 * r_cpu / wall, 1), "rss_bytes": r_rss}
    _, pcts, _ = _cpu(loads, s0, s1)
    load_cpu = sum(pct / 100.0 * wall for pct in pcts)
    out["loadgen"] = {"procs": len(results), "cpu_percent_max": round(max(pcts, default=0.0), 1),
                      "cpu_percent_per_proc": [round(x, 1) for x in pcts],
                      "cpu_us_per_sample": round(load_cpu / (plan.rate * wall) * 1e6, 2),
                      "send_lag_ms_max": max(float(r["send_lag_ms_max"]) for r in results)}
    host = {k: host1[k] - host0[k] for k in host0}
    host_figures(out, host, self1 - self0, [{"cpu_s": load_cpu}], wall)
    w = out["warnings"]
    for i, pct in enumerate(pcts):
        if pct > LOADGEN_SATURATION_PERCENT:
            w.append(f"load process {i} used {pct:.0f}% of a core: the load generator, not "
                     "the edge, may be the bottleneck (add --procs, lower the rate)")
    if out["origin"]["missing"]:
        w.append(f"the origin counted {out['origin']['missing']} fewer samples than were "
                 f"acknowledged (within {ORIGIN_WAIT_S:.0f} s)")
    if acked < sent:
        w.append(f"{sent - acked} samples sent but not acknowledged when the run ended")
    return out
