"""``functions``: edge RPCs: the edge's CPU per call beyond the function body, on
WebSocket and QUIC, and calls per second as edges are added.

Starts a local cluster (embedded Redis, ``--edges`` edges listening on WebSocket and
QUIC, each loading ``bench.rpc_functions``), then ``--procs`` load-generator processes
whose SDK clients (``--clients`` in all, kind ``service``, ``rpc`` claim ``*``) keep
``--in-flight`` requests outstanding each (closed loop).  Every phase connects its
clients afresh, runs ``--warmup`` seconds, then measures ``--duration`` seconds:

- ``ws`` / ``quic``, mode ``rpc``: every client on edge 1 calls ``echo`` (its
  arguments: ``--payload-size`` bytes) or, with ``--body-us N``, ``work`` (spins N µs
  of the edge's CPU).  Edge CPU per call = edge 1's CPU (``/proc``) / calls answered;
  ``overhead_us_per_call`` = that minus the body (N µs; 0 for ``echo``).
- ``ws`` / ``quic``, mode ``ping``: the same clients send PINGs (answered by PONG:
  the protocol's cheapest round trip) instead: edge CPU per round trip, the baseline
  measured in the same run.  ``overhead_over_ping_us`` = the RPC's overhead minus it:
  what the functions machinery (slots, task, context, msgpack, metrics) adds.
- ``scaling``: the ``ws`` RPC load spread over the first n edges for n = 1..E (client
  ``i`` on edge ``i mod n``; n = 1 is the ``ws`` phase): calls/s for each, and the
  ratio E edges / 1 edge.  The load is the same; whether it saturates the edges
  depends on the machine: each edge's CPU and the load generators' are reported, and
  a note says when there are fewer cores than edges + load generators.

``--pin`` gives each edge its own CPU when there are enough (edge ``i`` on CPU ``i``
while at least one CPU is left for the load generators and Redis, which get the
rest), else the edges share CPUs ``0..ncpu-2`` and the load the last one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.errors import BenchError, BenchFailure
from bench.latency import Latency
from bench.procstats import (
    LOADGEN_SATURATION_PERCENT,
    OTHER_CPU_WARN_PERCENT,
    ProcSample,
    can_pin,
    cpu_between,
    pin_pid,
    pin_self,
    sample,
    system_cpu,
)
from bench.progress import Progress
from bench.rpc_functions import MAX_WORK_US
from bench.runner import split
from bench.scenarios.functions_load import Phase, run_functions_worker
from bench.targets import TargetSpec
from bench.validators import non_negative_float, positive_float, positive_int
from bench.workers import WorkerJob, WorkerPool
from edge_node.local.scrape import scrape_metrics

__all__ = ["register", "run_functions", "ROWS", "TRANSPORTS"]

FUNCTIONS_SPEC = "bench.rpc_functions:functions"
TRANSPORTS = ("ws", "quic")
#: The edge's defaults (docs/functions.md): calls in flight per edge and per client.
EDGE_CONCURRENCY = 256
CLIENT_CONCURRENCY = 16
CONNECT_TIMEOUT_S = 60.0
START_DELAY_S = 0.2
EDGE_SATURATION_PERCENT = 90.0
#: The whole machine busier than this (all processes and interrupts, % of all cores):
#: the machine is the bound.
MACHINE_SATURATION_PERCENT = 90.0

ROWS: list[tuple[str, str]] = []
for _t, _label in (("ws", "WebSocket"), ("quic", "QUIC")):
    ROWS += [
        (f"{_label}: calls/s (1 edge)", f"{_t}.rpc.per_s"),
        (f"{_label}: edge CPU µs per call", f"{_t}.rpc.cpu_us"),
        (f"{_label}: function body µs per call (known)", f"{_t}.rpc.body_us"),
        (f"{_label}: CPU µs per call beyond the body", f"{_t}.overhead_us_per_call"),
        (f"{_label}: edge CPU µs per PING round trip (baseline)", f"{_t}.ping.cpu_us"),
        (f"{_label}: beyond the body, minus a PING (µs)", f"{_t}.overhead_over_ping_us"),
        (f"{_label}: call latency p50 µs", f"{_t}.rpc.latency_us.p50"),
        (f"{_label}: call latency p99 µs", f"{_t}.rpc.latency_us.p99"),
        (f"{_label}: edge CPU (% of one core)", f"{_t}.rpc.edge_cpu_percent"),
        (f"{_label}: load generators' CPU (% of one core, summed)",
         f"{_t}.rpc.loadgen_cpu_percent"),
        (f"{_label}: other processes' CPU (% of one core, host noise)",
         f"{_t}.rpc.other_cpu_percent"),
    ]


def register(subs: Any) -> None:
    """Add the ``functions`` sub-command to ``subs`` (an argparse subparsers action)."""
    sp = subs.add_parser(
        "functions", help="edge RPCs: CPU per call beyond the body (ws, quic), calls/s "
        "as edges are added", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--edges", type=positive_int, default=2,
                    help="edges of the scaling phases (1..E) (default: 2)")
    sp.add_argument("--clients", type=positive_int, default=16,
                    help="client connections in every phase (default: 16)")
    sp.add_argument("--in-flight", type=positive_int, default=4,
                    help=f"requests each client keeps outstanding, at most "
                    f"{CLIENT_CONCURRENCY} (default: 4)")
    sp.add_argument("--payload-size", type=positive_int, default=64,
                    help="bytes of the RPC's arguments (default: 64)")
    sp.add_argument("--body-us", type=int, default=0,
                    help=f"0: call 'echo'; N (1..{MAX_WORK_US}): call 'work', which spins "
                    "N µs of the edge's CPU (default: 0)")
    sp.add_argument("--duration", type=positive_float, default=5.0,
                    help="measured seconds per phase (default: 5)")
    sp.add_argument("--warmup", type=non_negative_float, default=1.0,
                    help="seconds per phase before measuring (default: 1)")
    sp.add_argument("--procs", type=positive_int, default=2,
                    help="load-generator processes (default: 2)")
    sp.add_argument("--runs", type=positive_int, default=1,
                    help="runs (a fresh cluster each); the report shows medians (default: 1)")
    sp.add_argument("--pin", action="store_true",
                    help="each edge on its own CPU where there are enough, the load "
                    "generators and Redis on the rest")
    sp.add_argument("--out", type=Path, default=Path("bench-results"),
                    help="report directory (default: bench-results)")
    sp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sp.set_defaults(func=cmd)


def validate(p: dict[str, Any]) -> None:
    """Raise :class:`BenchError` for parameters the edges would refuse or that make
    no sense (calls over the edge's concurrency bounds are refused, not queued)."""
    if p["in_flight"] > CLIENT_CONCURRENCY:
        raise BenchError(f"--in-flight must be at most {CLIENT_CONCURRENCY} (the edge's "
                         "--function-client-concurrency)")
    if p["clients"] * p["in_flight"] > EDGE_CONCURRENCY:
        raise BenchError(f"--clients x --in-flight must be at most {EDGE_CONCURRENCY} (the "
                         "edge's --function-concurrency: every client is on one edge in "
                         "the 1-edge phases)")
    if p["procs"] > p["clients"]:
        raise BenchError("--procs must be at most --clients")
    if not 0 <= p["body_us"] <= MAX_WORK_US:
        raise BenchError(f"--body-us must be between 0 and {MAX_WORK_US}")
    if p["payload_size"] > 16 * 1024:
        raise BenchError("--payload-size must be at most 16384 (the edge's "
                         "--function-max-bytes is 32 KiB)")
    if p["edges"] > 16:
        raise BenchError("--edges must be at most 16")


def cmd(args: argparse.Namespace) -> int:
    """The ``functions`` sub-command: run, write the report, print the summary."""
    params = {"edges": args.edges, "clients": args.clients, "in_flight": args.in_flight,
              "payload_size": args.payload_size, "body_us": args.body_us,
              "duration": args.duration, "warmup": args.warmup, "procs": args.procs,
              "pin": args.pin}
    validate(params)
    if args.pin and not can_pin():
        raise BenchError("--pin needs at least 2 CPUs and sched_setaffinity")
    notes = machine_notes(params, os.cpu_count() or 1)
    for n in notes:
        _say(args.quiet, f"note: {n}")
    runs = [run_functions(params, args.quiet, i, args.runs) for i in range(args.runs)]
    warnings = sorted({w for r in runs for w in r.pop("warnings")} | set(notes))
    stamp = report.timestamp()
    doc = {"schema": report.SCHEMA, "meta": report.make_meta("functions", params, stamp),
           "targets": {"edge": {"runs": runs, "median": report.medians(runs)}},
           "ratios": {}, "warnings": warnings}
    md = report.markdown(doc, ROWS + scaling_rows(args.edges))
    json_path, md_path = report.write(doc, args.out, md)
    print(md)
    print(f"report: {json_path}", file=sys.stderr)
    print(f"summary: {md_path}", file=sys.stderr)
    return 0


def scaling_rows(edges: int) -> list[tuple[str, str]]:
    """Report rows of the scaling phases for 1..``edges`` edges."""
    rows = [(f"scaling: calls/s, {n} edge{'s' if n > 1 else ''}",
             f"scaling.edges_{n}.per_s") for n in range(1, edges + 1)]
    rows += [(f"scaling: edge CPU µs per call, {n} edge{'s' if n > 1 else ''}",
              f"scaling.edges_{n}.cpu_us") for n in range(1, edges + 1)]
    rows += [(f"scaling: edges' CPU, {n} edge{'s' if n > 1 else ''} (% of one core, summed)",
              f"scaling.edges_{n}.edge_cpu_percent") for n in range(1, edges + 1)]
    rows += [(f"scaling: machine busy, {n} edge{'s' if n > 1 else ''} (% of all cores)",
              f"scaling.edges_{n}.host_busy_percent") for n in range(1, edges + 1)]
    if edges > 1:
        rows.append((f"scaling: calls/s ratio, {edges} edges / 1", "scaling.ratio"))
    rows.append(("scaling: calls per edge CPU-second (1 edge)",
                 "scaling.calls_per_edge_cpu_s"))
    return rows


def machine_notes(p: dict[str, Any], ncpu: int) -> list[str]:
    """What this machine cannot show, said up front (also kept in the report)."""
    notes: list[str] = []
    if p["pin"] and p["edges"] >= ncpu:
        notes.append(f"--pin: {p['edges']} edges share {max(1, ncpu - 1)} CPU(s) (one is "
                     "left for the load generators and Redis)")
    if ncpu >= p["edges"] + p["procs"]:
        return notes
    return [*notes, f"this machine has {ncpu} CPUs, fewer than {p['edges']} edges + {p['procs']} "
            "load generators: the scaling phases show what it allows, not how far edges "
            "scale (see scaling.calls_per_edge_cpu_s and the edges' CPU)"]


def pin_layout(edges: int, ncpu: int) -> tuple[list[set[int]], set[int]]:
    """CPUs of each edge and of the load (load generators, Redis, this process):
    edge ``i`` on CPU ``i`` when ``edges < ncpu``, else edges share CPUs
    ``0..ncpu-2`` round-robin; the load gets the CPUs no edge has (at least one)."""
    server = max(1, min(edges, ncpu - 1))
    return [{i % server} for i in range(edges)], set(range(server, ncpu))


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def run_functions(p: dict[str, Any], quiet: bool = False, run: int = 0,
                  runs: int = 1) -> dict[str, Any]:
    """One run on a fresh cluster: every phase; the run's figures (and ``warnings``)."""
    import psutil

    from edge_node.local.cluster import LocalCluster

    cluster = LocalCluster(p["edges"], edge_args=["--functions", FUNCTIONS_SPEC],
                           origin=False, quic=True)
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        raise BenchFailure(f"could not start the local cluster: {exc}") from exc
    old_affinity = os.sched_getaffinity(0) if p["pin"] else None
    pool: WorkerPool | None = None
    try:
        edge_procs = [psutil.Process(e.pid) for e in cluster.edges]
        load_cpus: set[int] | None = None
        if p["pin"]:
            edge_cpus, load_cpus = pin_layout(p["edges"], os.cpu_count() or 1)
            for e, cpus in zip(cluster.edges, edge_cpus, strict=True):
                pin_pid(e.pid, cpus)
            if cluster.redis is not None:
                pin_pid(cluster.redis.pid, load_cpus)
            pin_self(load_cpus)
        spec = TargetSpec("edge", cluster.urls[0], cluster.secret,
                          quic_url=cluster.quic_urls[0], ca_file=cluster.ca_file)
        shares = split(range(p["clients"]), p["procs"])
        pool = WorkerPool([WorkerJob(i, run_functions_worker, spec, None,
                                     frozenset(load_cpus) if load_cpus else None)
                           for i in range(p["procs"])])
        pool.start()
        loadgen = [psutil.Process(pid) for pid in pool.pids]
        redis = [psutil.Process(cluster.redis.pid)] if cluster.redis is not None else []
        load_cores = len(load_cpus) if load_cpus else os.cpu_count() or 1
        progress = Progress(not quiet)
        payload = b"\xab" * p["payload_size"]
        fn, args = (("work", {"us": p["body_us"], "echo": payload}) if p["body_us"]
                    else ("echo", payload))
        out: dict[str, Any] = {}
        warnings: list[str] = []

        def phase(name: str, mode: str, urls: list[str]) -> dict[str, Any]:
            progress.label = f"run {run + 1}/{runs} {name}:"
            phases = [Phase(mode, tuple(urls), share, p["in_flight"], fn, args,
                            cluster.secret, cluster.ca_file) for share in shares]
            assert pool is not None
            fig = _phase(pool, phases, p, [cluster.edges[i].http_url for i in
                                           range(len(urls))],
                         edge_procs[:len(urls)], loadgen, [*edge_procs[len(urls):], *redis],
                         load_cores, progress)
            warnings.extend(f"{name}: {w}" for w in fig.pop("warnings"))
            return fig

        for t in TRANSPORTS:
            urls = cluster.urls if t == "ws" else cluster.quic_urls
            rpc = phase(f"{t} rpc", "rpc", urls[:1])
            ping = phase(f"{t} ping", "ping", urls[:1])
            out[t] = {"rpc": rpc, "ping": ping, **_overhead(rpc, ping, p["body_us"])}
        scaling: dict[str, Any] = {"edges_1": out["ws"]["rpc"]}
        for n in range(2, p["edges"] + 1):
            scaling[f"edges_{n}"] = phase(f"{n} edges", "rpc", cluster.urls[:n])
        one = scaling["edges_1"]
        if p["edges"] > 1:
            scaling["ratio"] = report.ratio(scaling[f"edges_{p['edges']}"]["per_s"],
                                            one["per_s"])
        scaling["calls_per_edge_cpu_s"] = (round(1e6 / one["cpu_us"]) if one["cpu_us"]
                                           else None)
        out["scaling"] = scaling
        pool.send_all("stop")
        pool.recv_all("result", 30.0)
        progress.done()
    except psutil.Error as exc:
        raise BenchFailure(f"an edge or a load process died during the run: {exc}") from exc
    finally:
        if pool is not None:
            pool.close()
        if old_affinity is not None:
            pin_self(old_affinity)
        cluster.stop()
    out["warnings"] = warnings
    return out


def _overhead(rpc: dict[str, Any], ping: dict[str, Any], body_us: int) -> dict[str, Any]:
    """Per call: the edge's CPU beyond the function body, and that minus a PING's."""
    if rpc["cpu_us"] is None:
        return {"overhead_us_per_call": None, "overhead_over_ping_us": None}
    over = round(rpc["cpu_us"] - body_us, 2)
    return {"overhead_us_per_call": over,
            "overhead_over_ping_us": (round(over - ping["cpu_us"], 2)
                                      if ping["cpu_us"] is not None else None)}


def _phase(pool: WorkerPool, phases: list[Phase], p: dict[str, Any], http_urls: list[str],
           edges: list[Any], loadgen: list[Any], rest: list[Any], load_cores: int,
           progress: Progress) -> dict[str, Any]:
    """Play one phase on every worker; its figures (see :func:`_figures`).  ``edges``:
    the phase's edge processes; ``rest``: the run's other processes (idle edges,
    Redis), counted as ours when telling the host's other load apart."""
    for i, share in enumerate(phases):
        pool.send_to(i, "phase", share)
    pool.recv_all("ready", CONNECT_TIMEOUT_S,
                  on_wait=lambda: progress.update("connecting…"))
    start = time.monotonic_ns() + int(START_DELAY_S * 1e9)
    window_start = start + int(p["warmup"] * 1e9)
    end = window_start + int(p["duration"] * 1e9)
    pool.send_all("go", (window_start, end))
    base = pool.progress()

    def tick() -> None:
        progress.update(lambda: f"requests={pool.progress() - base:,}")

    _wait_until(window_start, tick)
    m0 = [scrape_metrics(u, timeout=5) for u in http_urls]
    c0, g0, r0 = ([sample(x) for x in group] for group in (edges, loadgen, rest))
    h0, self0, t0 = system_cpu(), time.process_time(), time.monotonic()
    _wait_until(end, tick)
    h1, self1, t1 = system_cpu(), time.process_time(), time.monotonic()
    c1, g1, r1 = ([sample(x) for x in group] for group in (edges, loadgen, rest))
    m1 = [scrape_metrics(u, timeout=5) for u in http_urls]
    results = pool.recv_all("phase_result", 30.0, on_wait=tick)
    ours = self1 - self0 + sum(b.cpu_s - a.cpu_s for a, b in
                               zip([*c0, *g0, *r0], [*c1, *g1, *r1], strict=True))
    wall = max(t1 - t0, 1e-9)
    host = {"busy_cores": sum(h1[k] - h0[k] for k in h0) / wall,
            "other_cores": max(0.0, h1["task"] - h0["task"] - ours) / wall}
    return _figures(phases[0].mode, phases[0].function, p, results, (c0, c1), (g0, g1),
                    (m0, m1), load_cores, host)


def _wait_until(t_ns: int, tick: Any) -> None:
    while (left := t_ns - time.monotonic_ns()) > 0:
        tick()
        time.sleep(min(0.1, left / 1e9))


def _figures(mode: str, fn: str, p: dict[str, Any], results: list[dict[str, Any]],
             cpu: tuple[list[ProcSample], list[ProcSample]],
             gen: tuple[list[ProcSample], list[ProcSample]],
             metrics: tuple[list[dict[str, float]], list[dict[str, float]]],
             load_cores: int, host: dict[str, float]) -> dict[str, Any]:
    """One phase's figures: requests answered in the window and per second; the edges'
    CPU per request (``cpu_us``) and in all; for an RPC the known body and what the
    edges' metrics say (calls ``ok``, and the functions' wall time per call, which on
    Python 3.11 includes the call's wait on a busy event loop); latency; the load
    generators' CPU; the machine's (``host``: ``busy_cores``, the cores' worth of CPU
    all processes and interrupts used, and ``other_cores``, processes not of this
    run); warnings (errors, a saturated load generator, edge or machine, a noisy
    host)."""
    window = sum(int(r["requests_window"]) for r in results)
    edge_cpu = [cpu_between(a, b) for a, b in zip(*cpu, strict=True)]
    edge_s = sum(c for c, _pct in edge_cpu)
    load = [cpu_between(a, b)[1] for a, b in zip(*gen, strict=True)]
    hist = Latency()
    errors: dict[str, int] = {}
    for r in results:
        hist.merge_encoded(r["latency"])
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + int(v)
    dur = p["duration"]
    out: dict[str, Any] = {
        "requests": window,
        "per_s": round(window / dur, 1),
        "cpu_us": round(1e6 * edge_s / window, 2) if window else None,
        "edge_cpu_percent": round(sum(pct for _c, pct in edge_cpu), 1),
        "edge_cpu_percent_per_edge": [round(pct, 1) for _c, pct in edge_cpu],
        "latency_us": {k: v for k, v in hist.summary().items() if k != "count"},
        "loadgen_cpu_percent": round(sum(load), 1),
        "loadgen_cpu_percent_max": round(max(load, default=0.0), 1),
        "errors": sum(errors.values()),
        "host_busy_percent": round(100.0 * host["busy_cores"] / (os.cpu_count() or 1), 1),
        "other_cpu_percent": round(100.0 * host["other_cores"], 1),
    }
    if mode == "rpc":
        def delta(name: str) -> float:
            return sum(b.get(name, 0.0) - a.get(name, 0.0)
                       for a, b in zip(*metrics, strict=True))

        ok = delta(f'edge_function_calls_total{{function="{fn}",outcome="ok"}}')
        secs = delta(f'edge_function_seconds_total{{function="{fn}"}}')
        out["body_us"] = p["body_us"]
        out["edge_calls_ok"] = int(ok)
        out["metric_fn_wall_us"] = round(1e6 * secs / ok, 2) if ok else None
    warns: list[str] = []
    if errors:
        warns.append(f"{sum(errors.values())} failed requests ({', '.join(sorted(errors))})")
    if not window:
        warns.append("no request was answered in the window")
    cores = max(1, min(len(load), load_cores))
    if sum(load) / cores > LOADGEN_SATURATION_PERCENT:
        warns.append(f"the load generators used {sum(load):.0f}% of {cores} core(s): they, "
                     "not the edges, may be the bottleneck (requests/s is a floor)")
    if out["host_busy_percent"] > MACHINE_SATURATION_PERCENT:
        warns.append(f"the machine was {out['host_busy_percent']:.0f}% busy (all its "
                     f"{os.cpu_count() or 1} cores): requests/s is what it allows")
    if out["other_cpu_percent"] > OTHER_CPU_WARN_PERCENT:
        warns.append(f"processes outside the benchmark used {out['other_cpu_percent']:.0f}% "
                     "of a core during the window: the host was not quiet, figures are noisy")
    busiest = max((pct for _c, pct in edge_cpu), default=0.0)
    if busiest > EDGE_SATURATION_PERCENT:
        warns.append(f"an edge used {busiest:.0f}% of a core: saturated")
    out["warnings"] = warns
    return out
