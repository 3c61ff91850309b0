"""Run a cluster scenario: a local cluster (embedded Redis, N edges, optionally the
origin), SDK clients from :mod:`bench.cluster_load` in ``--procs`` load processes,
an optional fault at a fixed time, then the figures and the report document.

Faults (``Fault.action``): ``kill`` (SIGKILL edge 1), ``stop`` (SIGSTOP edge 1 until
the end of the run), ``drain`` (SIGTERM edge 1: live handover), ``redis-stop``
(SIGSTOP the Redis server for ``Fault.outage`` seconds). Clients whose home is edge
1 are the *affected* clients of an edge fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import report
from bench.cluster_load import ClusterPlan, ClusterShare, run_cluster_worker
from bench.errors import BenchError, BenchFailure
from bench.procstats import (
    LOADGEN_SATURATION_PERCENT,
    ProcSample,
    can_pin,
    cpu_between,
    metric_total,
    pin_pid,
    pin_self,
    sample,
    system_cpu,
)
from bench.progress import Progress
from bench.runner import LOAD_CPUS, SERVER_CPUS
from bench.scenarios.cluster_figures import analyse
from bench.scenarios.fanout import host_figures
from bench.targets import TargetSpec
from bench.workers import WorkerJob, WorkerPool

FAULTS = ("kill", "stop", "drain", "redis-stop")
CONNECT_TIMEOUT_S = 180.0
START_DELAY_S = 0.5
ORIGIN_WAIT_S = 60.0
ORIGIN_STALL_S = 5.0
EDGE_SATURATION_PERCENT = 90.0

Layout = Callable[[tuple[str, ...], bytes], ClusterPlan]


@dataclass(frozen=True)
class Fault:
    """What happens at ``at`` seconds after the start of publishing."""

    action: str
    at: float
    outage: float = 2.0


@dataclass(frozen=True)
class ClusterOptions:
    edges: int
    procs: int
    runs: int
    out: Path
    pin: bool = False
    quiet: bool = False
    plot: bool = True
    connect_rate: float = 2000.0
    origin: bool = False
    uplink_rooms: str = ""
    edge_args: tuple[str, ...] = field(default_factory=tuple)


def validate(opts: ClusterOptions, fault: Fault | None, duration: float) -> None:
    if opts.edges < 1:
        raise BenchError("--edges must be at least 1")
    if fault is not None:
        if fault.action not in FAULTS:
            raise BenchError(f"--fault must be one of {', '.join(FAULTS)}")
        if fault.action != "redis-stop" and opts.edges < 2:
            raise BenchError("an edge fault needs --edges 2 or more (clients need somewhere "
                             "to go)")
        if not 0 < fault.at < duration:
            raise BenchError("--at must be inside the publishing time (0 < at < duration)")


def run_cluster(scenario: str, params: dict[str, Any], layout: Layout, opts: ClusterOptions,
                fault: Fault | None) -> dict[str, Any]:
    """Run ``opts.runs`` fresh clusters; return the report document (target ``edge``)."""
    warnings: list[str] = []
    pinned = opts.pin and can_pin()
    if opts.pin and not pinned:
        warnings.append("--pin ignored: CPUs 0 and 1 are not both available to this process")
    all_params = {**params, "edges": opts.edges, "procs": opts.procs, "runs": opts.runs,
                  "pin": pinned, "connect_rate": opts.connect_rate,
                  "fault": fault.action if fault else None,
                  "fault_at": fault.at if fault else None}
    stamp = report.timestamp()
    meta = report.make_meta(scenario, all_params, stamp)
    return edge_runs_report(meta, warnings, opts, scenario,
                            lambda progress: _run_once(layout, opts, fault, pinned, progress))


def edge_runs_report(meta: dict[str, Any], warnings: list[str], opts: ClusterOptions,
                     label: str, run_once: Callable[[Progress], dict[str, Any]]
                     ) -> dict[str, Any]:
    """Call ``run_once`` ``opts.runs`` times (a progress line labelled ``label``) and
    return the report document: the runs, their medians, their warnings after
    ``warnings``."""
    progress = Progress(enabled=not opts.quiet)
    runs: list[dict[str, Any]] = []
    try:
        for k in range(opts.runs):
            progress.label = f"[{label} run {k + 1}/{opts.runs}]"
            result = run_once(progress)
            progress.done()
            runs.append(result)
            warnings += [f"edge run {k + 1}: {w}" for w in result["warnings"]]
    finally:
        progress.done()
    return {"schema": report.SCHEMA, "meta": meta,
            "targets": {"edge": {"runs": runs, "median": report.medians(runs)}},
            "ratios": {}, "warnings": warnings}


def _edge_args(opts: ClusterOptions) -> list[str]:
    args = ["--connect-rate", str(opts.connect_rate), *opts.edge_args]
    if opts.uplink_rooms:
        args += ["--uplink-rooms", opts.uplink_rooms]
    return args


def _procs_of(cluster: Any) -> dict[str, list[psutil.Process]]:
    """The cluster's processes by role: edges, redis, origin (with its workers)."""
    out: dict[str, list[psutil.Process]] = {"edges": [], "redis": [], "origin": []}
    for e in cluster.edges:
        out["edges"].append(psutil.Process(e.pid))
    if cluster.redis is not None:
        out["redis"].append(psutil.Process(cluster.redis.pid))
    if cluster.origin is not None:
        root = psutil.Process(cluster.origin.proc.pid)
        out["origin"] = [root, *root.children(recursive=True)]
    return out


def _sample_all(procs: list[psutil.Process], last: dict[int, ProcSample]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            last[p.pid] = sample(p)


def _cpu(procs: list[psutil.Process], a: dict[int, ProcSample], b: dict[int, ProcSample]
         ) -> tuple[float, list[float], int]:
    """CPU seconds over all ``procs``, percent per process, RSS at the end."""
    total, pcts, rss = 0.0, [], 0
    for p in procs:
        if p.pid in a and p.pid in b:
            cpu, pct = cpu_between(a[p.pid], b[p.pid])
            total += cpu
            pcts.append(round(pct, 1))
            rss += b[p.pid].rss
    return total, pcts, rss


@contextlib.contextmanager
def running_cluster(edges: int, edge_args: list[str], origin: bool,
                    pinned: bool) -> Iterator[tuple[Any, dict[str, list[psutil.Process]]]]:
    """A started :class:`~edge_node.local.cluster.LocalCluster` and its processes by role;
    with ``pinned`` the edges go to the server CPU, Redis, the origin and this
    process to the load CPU (restored on exit).  The cluster is stopped on exit."""
    import os

    from edge_node.local.cluster import LocalCluster

    cluster = LocalCluster(edges, edge_args=edge_args, origin=origin)
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        raise BenchFailure(f"could not start the local cluster: {exc}") from exc
    old_affinity = None
    try:
        procs = _procs_of(cluster)
        if pinned:
            old_affinity = os.sched_getaffinity(0)
            for p in procs["edges"]:
                pin_pid(p.pid, set(SERVER_CPUS))
            for p in [*procs["redis"], *procs["origin"]]:
                pin_pid(p.pid, set(LOAD_CPUS))
            pin_self(set(LOAD_CPUS))
        yield cluster, procs
    finally:
        if old_affinity is not None:
            pin_self(set(old_affinity))
        cluster.stop()


def _run_once(layout: Layout, opts: ClusterOptions, fault: Fault | None, pinned: bool,
              progress: Progress) -> dict[str, Any]:
    with running_cluster(opts.edges, _edge_args(opts), opts.origin, pinned) as (cluster, procs):
        plan = layout(tuple(cluster.urls), cluster.secret)
        return _drive(cluster, plan, procs, opts, fault, pinned, progress)


def _drive(cluster: Any, plan: ClusterPlan, procs: dict[str, list[psutil.Process]],
           opts: ClusterOptions, fault: Fault | None, pinned: bool,
           progress: Progress) -> dict[str, Any]:
    n = len(plan.clients)
    nprocs = max(1, min(opts.procs, n))
    spec = TargetSpec("edge", plan.urls[0], plan.secret)
    # Set up at most at 80 % of the edges' connection-rate limit (no 503s before the run).
    pace = 0.8 * opts.connect_rate / nprocs
    jobs = [WorkerJob(i, run_cluster_worker, spec,
                      ClusterShare(plan, tuple(range(i, n, nprocs)), pace),
                      LOAD_CPUS if pinned else None) for i in range(nprocs)]
    pool = WorkerPool(jobs)
    victim = cluster.edges[0]
    events: list[dict[str, Any]] = []
    t0 = fault_ns = 0
    lag0: dict[int, int] = {}
    everyone = [*procs["edges"], *procs["redis"], *procs["origin"]]
    loads: list[psutil.Process] = []
    s0: dict[int, ProcSample] = {}
    s1: dict[int, ProcSample] = {}

    def line() -> str:
        el = (time.monotonic_ns() - t0) / 1e9 if t0 else 0.0
        return f"t={max(0.0, el):.1f}/{plan.duration:g}s received={pool.progress():,}"

    try:
        pool.start()
        # The parent samples the load processes too: a process behind its schedule
        # wakes late to sample itself, which would shrink its own window.
        loads += [psutil.Process(pid) for pid in pool.pids]
        everyone += loads
        pool.recv_all("ready", CONNECT_TIMEOUT_S,
                      on_wait=lambda: progress.update(f"connecting {n} clients…"))
        t0 = time.monotonic_ns() + int(START_DELAY_S * 1e9)
        sched = plan.schedule(t0)
        fault_ns = t0 + int(fault.at * 1e9) if fault else 0
        pool.send_all("go", {"t0": t0, "fault_ns": fault_ns})
        actions: list[tuple[int, str]] = [(sched.window_start_ns, "window"),
                                          (sched.end_ns, "end")]
        if fault is not None:
            actions.append((fault_ns, "fault"))
            if fault.action == "redis-stop":
                actions.append((fault_ns + int(fault.outage * 1e9), "redis-resume"))
        actions.sort()
        host0 = self0 = None
        for when, what in actions:
            while (left := when - time.monotonic_ns()) > 0:
                progress.update(line)
                time.sleep(min(0.05, left / 1e9))
            if what == "window":
                host0, self0 = system_cpu(), time.process_time()
                _sample_all(everyone, s0)
                if opts.origin:
                    lag0 = _origin_stats(cluster.redis_url)["lag_buckets"]
            elif what == "end":
                _sample_all(everyone, s1)
                host1, self1 = system_cpu(), time.process_time()
            elif what == "fault":
                assert fault is not None
                _sample_all(procs["edges"][:1], s1)  # the victim's last sample
                _apply(cluster, victim, fault.action)
                events.append({"t_s": fault.at, "what": f"{fault.action} "
                               f"{'redis' if fault.action == 'redis-stop' else victim.edge_id}"})
            elif what == "redis-resume":
                cluster.redis.resume()
                assert fault is not None
                events.append({"t_s": fault.at + fault.outage, "what": "redis resumed"})
        timeout = plan.drain + plan.settle + 120.0
        results = pool.recv_all("result", timeout, on_wait=lambda: progress.update(line))
    finally:
        pool.close()
        if fault is not None and fault.action == "stop":
            with contextlib.suppress(ProcessLookupError):
                victim.signal(signal.SIGCONT)
        if fault is not None and fault.action == "redis-stop" and cluster.redis is not None:
            with contextlib.suppress(ProcessLookupError):
                cluster.redis.resume()
    clients = [cl for r in results for cl in r["clients"]]
    affected = {cl["idx"] for cl in clients if cl["start_edge"] == 0} if fault and \
        fault.action != "redis-stop" else set()
    out = analyse(plan, results, t0, fault_ns, affected)
    misplaced = sum(1 for cl in clients if cl["start_edge"] != plan.clients[cl["idx"]].home)
    if misplaced:
        out.setdefault("notes", []).append(
            f"{misplaced} clients started on another edge than planned (refused at setup)")
    out["timeline"]["events"] = events
    assert host0 is not None and self0 is not None
    wall = (sched.end_ns - sched.window_start_ns) / 1e9
    _server_figures(out, procs, s0, s1)
    host = {k: host1[k] - host0[k] for k in host0}
    for r, lp in zip(results, loads, strict=True):
        if lp.pid in s0 and lp.pid in s1:
            r["cpu_s"], _ = cpu_between(s0[lp.pid], s1[lp.pid])
            r["cpu_wall_s"] = s1[lp.pid].t - s0[lp.pid].t
    out["loadgen"] = _loadgen(results, out)
    out["warnings"] = []
    host_figures(out, host, self1 - self0, results, wall)
    if fault is not None and fault.action != "redis-stop":
        out["failover"]["connects_rejected"] = sum(
            metric_total(e.http_url, "edge_connects_rejected_total") for e in cluster.edges[1:])
    if opts.origin:
        out["origin"] = {**out.get("origin", {}), **_origin_figures(cluster, out, lag0)}
    out["warnings"] += _warnings(out) + out.pop("notes", [])
    return out


def _apply(cluster: Any, victim: Any, action: str) -> None:
    if action == "redis-stop":
        cluster.redis.pause()
        return
    sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "drain": signal.SIGTERM}[action]
    victim.signal(sig)


def _server_figures(out: dict[str, Any], procs: dict[str, list[psutil.Process]],
                    s0: dict[int, ProcSample], s1: dict[int, ProcSample]) -> None:
    wall = out["throughput"]["window_s"]
    deliveries = out["throughput"]["deliveries_window"]
    cpu, pcts, rss = _cpu(procs["edges"], s0, s1)
    out["server"] = {
        "edges": len(procs["edges"]),
        "cpu_s": round(cpu, 4),
        "cpu_percent": round(100.0 * cpu / wall, 1) if wall else 0.0,
        "cpu_percent_per_edge": pcts,
        "cpu_percent_max_edge": max(pcts) if pcts else 0.0,
        "cpu_us_per_delivery": round(cpu / deliveries * 1e6, 2) if deliveries else 0.0,
        "rss_bytes": rss,
        "rss_mib": round(rss / 2**20, 1),
    }
    for role in ("redis", "origin"):
        if procs[role]:
            r_cpu, _, r_rss = _cpu(procs[role], s0, s1)
            out[role] = {"cpu_s": round(r_cpu, 4),
                         "cpu_percent": round(100.0 * r_cpu / wall, 1) if wall else 0.0,
                         "rss_bytes": r_rss}


def _loadgen(results: list[dict[str, Any]], out: dict[str, Any]) -> dict[str, Any]:
    pcts = [100.0 * r["cpu_s"] / r["cpu_wall_s"] if r["cpu_wall_s"] else 0.0 for r in results]
    receipts = out["throughput"]["deliveries_window"]
    publishes = out["throughput"]["offered_publishes_per_s"] * out["throughput"]["window_s"]
    load_cpu = sum(float(r["cpu_s"]) for r in results)
    rec = [100.0 * r.get("recovery_cpu_s", 0.0) / r["recovery_wall_s"]
           for r in results if r.get("recovery_wall_s")]
    extra = {"recovery_cpu_percent_max": round(max(rec), 1)} if rec else {}
    return {**extra, "procs": len(results), "cpu_percent_max": round(max(pcts), 1),
            "cpu_percent_total": round(sum(pcts), 1),
            "cpu_percent_per_proc": [round(x, 1) for x in pcts],
            "cpu_us_per_receipt": round(load_cpu / receipts * 1e6, 2) if receipts else 0.0,
            "cpu_us_per_publish": round(load_cpu / publishes * 1e6, 2) if publishes else 0.0}


def _room_events(st: dict[str, Any]) -> int:
    return int(st["by_kind"].get("room_event", 0))


def _origin_stats(redis_url: str, expect: int | None = None,
                  count: Callable[[dict[str, Any]], int] = _room_events) -> dict[str, Any]:
    """The origin's counters (``origin.view.origin_stats``); with ``expect``, first wait
    until ``count`` of them (default: room events applied) reaches it, or made no
    progress for ``ORIGIN_STALL_S``, or ``ORIGIN_WAIT_S`` passed."""
    import redis.asyncio as aioredis

    from origin.settings import OriginSettings
    from origin.view import origin_stats

    async def poll() -> dict[str, Any]:
        r = aioredis.Redis.from_url(redis_url, socket_timeout=10)
        s = OriginSettings(redis_url=redis_url)
        t = last_t = time.monotonic()
        last = -1
        try:
            while True:
                st = await origin_stats(r, s)
                now = time.monotonic()
                st["waited_s"] = now - t
                applied = count(st)
                if applied != last:
                    last, last_t = applied, now
                if expect is None or applied >= expect or now - t > ORIGIN_WAIT_S \
                        or now - last_t > ORIGIN_STALL_S:
                    return st
                await asyncio.sleep(0.1)
        finally:
            await r.aclose()

    return asyncio.run(poll())


def _origin_figures(cluster: Any, out: dict[str, Any], lag0: dict[int, int]
                    ) -> dict[str, Any]:
    """Wait (bounded) until the origin applied every acknowledged publish; the lag of
    what it applied since the start of the window."""
    from origin.view import lag_quantiles

    acked = int(out["messages"]["publish_acked"])
    # Everything sent should arrive (publishes not yet acknowledged when the run ended
    # were still on their way): wait for all of it, or until the origin stalls.
    st = _origin_stats(cluster.redis_url, int(out["messages"]["sent"]))
    buckets = {b: n - lag0.get(b, 0) for b, n in st["lag_buckets"].items()}
    applied = int(st["by_kind"].get("room_event", 0))
    return {
        "lag_ms": lag_quantiles({b: n for b, n in buckets.items() if n > 0}),
        "lag_entries": sum(n for n in buckets.values() if n > 0),
        "room_events_applied": applied,
        "missing": max(0, acked - applied),
        "not_applied_of_sent": max(0, int(out["messages"]["sent"]) - applied),
        # More applied than ever sent: applied twice (the origin failed to dedupe).
        "extra": max(0, applied - int(out["messages"]["sent"])),
        "duplicates_ignored": int(st["duplicates_ignored"]),
        "catch_up_s": round(float(st["waited_s"]), 2),
    }


def _warnings(out: dict[str, Any]) -> list[str]:
    w: list[str] = []
    m = out["messages"]
    if m["lost"]:
        w.append(f"{m['lost']} of {m['expected']} deliveries lost "
                 f"({m['rooms_with_loss']} rooms)")
    if m["duplicates"]:
        w.append(f"{m['duplicates']} duplicate deliveries")
    if m["publish_errors"]:
        w.append(f"{m['publish_errors']} publish errors (last: {m['publish_last_error']})")
    for i, pct in enumerate(out["loadgen"]["cpu_percent_per_proc"]):
        if pct > LOADGEN_SATURATION_PERCENT:
            w.append(f"load process {i} used {pct:.0f}% of a core: the load generator, not "
                     "the edges, may be the bottleneck (add --procs, lower the rate)")
    for i, pct in enumerate(out["server"]["cpu_percent_per_edge"]):
        if pct > EDGE_SATURATION_PERCENT:
            w.append(f"edge {i + 1} at {pct:.0f}% of a core: saturated")
    rec = out["loadgen"].get("recovery_cpu_percent_max", 0.0)
    if rec > LOADGEN_SATURATION_PERCENT:
        w.append(f"a load process used {rec:.0f}% of a core from the fault until its clients "
                 "were served again: the time to served again includes the load generator's "
                 "own backlog (add --procs, fewer clients per process)")
    fo = out.get("failover")
    if fo and fo["served_again"] < fo["affected_clients"]:
        w.append(f"only {fo['served_again']} of {fo['affected_clients']} affected clients "
                 "were served again")
    org = out.get("origin")
    if org and org["missing"]:
        w.append(f"the origin applied {org['missing']} fewer room events than were "
                 f"acknowledged (within {ORIGIN_WAIT_S:.0f} s)")
    return w
