"""Command-line pieces shared by the cluster scenarios (rooms, telemetry, storm,
failover --load): options, report rows, writing the report and its plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.scenarios.cluster import FAULTS, ClusterOptions, Fault
from bench.validators import non_negative_float, positive_float, positive_int

DEFAULT_OUT = "bench-results"

CLUSTER_ROWS: list[tuple[str, str]] = [
    ("offered publishes/s", "throughput.offered_publishes_per_s"),
    ("offered deliveries/s", "throughput.offered_deliveries_per_s"),
    ("delivered/s (window)", "throughput.delivered_per_s"),
    ("latency p50 µs (from intended send)", "latency_us.p50"),
    ("latency p90 µs", "latency_us.p90"),
    ("latency p99 µs", "latency_us.p99"),
    ("latency p99.9 µs", "latency_us.p99_9"),
    ("latency max µs", "latency_us.max"),
    ("per-room p99 µs, median room", "rooms.p99_us_median"),
    ("per-room p99 µs, worst room", "rooms.p99_us_worst"),
    ("rooms with loss", "rooms.rooms_with_loss"),
    ("messages sent", "messages.sent"),
    ("publishes acknowledged", "messages.publish_acked"),
    ("lost", "messages.lost"),
    ("duplicates", "messages.duplicates"),
    ("publish errors", "messages.publish_errors"),
    ("edges CPU % of a core (sum)", "server.cpu_percent"),
    ("busiest edge CPU %", "server.cpu_percent_max_edge"),
    ("edges CPU µs per delivery", "server.cpu_us_per_delivery"),
    ("redis CPU %", "redis.cpu_percent"),
    ("load generator max CPU % (one process)", "loadgen.cpu_percent_max"),
    ("load generator CPU µs per receipt", "loadgen.cpu_us_per_receipt"),
    ("other processes' CPU % (host noise)", "host.other_cpu_percent"),
]

FAILOVER_ROWS: list[tuple[str, str]] = [
    ("affected clients", "failover.affected_clients"),
    ("served again", "failover.served_again"),
    ("time to served again p50 (s)", "failover.resume_s.p50"),
    ("time to served again p99 (s)", "failover.resume_s.p99"),
    ("time to all served again (s)", "failover.resume_s.max"),
    ("gap per affected client p50 (ms)", "failover.gap_ms.p50"),
    ("gap per affected client p99 (ms)", "failover.gap_ms.p99"),
    ("gap per affected client max (ms)", "failover.gap_ms.max"),
    ("longest gap of any receiver (ms)", "failover.gap_ms_all_receivers_max"),
    ("longest gap before the fault, any receiver (ms)", "failover.gap_ms_before_fault_max"),
    ("recovered=false", "failover.recovered_false"),
    ("reconnects", "failover.reconnects"),
    ("handoffs", "failover.handoffs"),
    ("connects refused (503, rate limit)", "failover.connects_rejected"),
]


def add_cluster_options(sub: argparse.ArgumentParser, *, edges: int, procs: int,
                        fault: bool = True) -> None:
    """Options every cluster scenario has."""
    g = sub.add_argument_group("cluster and run options")
    g.add_argument("--edges", type=positive_int, default=edges,
                   help=f"edges in the local cluster (default: {edges})")
    g.add_argument("--procs", type=positive_int, default=procs,
                   help=f"load-generator processes (default: {procs})")
    g.add_argument("--runs", type=positive_int, default=1,
                   help="runs (a fresh cluster each); the report shows medians (default: 1)")
    g.add_argument("--connect-rate", type=positive_float, default=2000.0,
                   help="the edges' new-connection rate limit, per s (default: 2000)")
    g.add_argument("--pin", action="store_true",
                   help="pin the edges to CPU 0, the load, Redis and the origin to CPU 1")
    g.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                   help=f"report directory (default: {DEFAULT_OUT})")
    g.add_argument("--no-plot", action="store_true", help="do not write the PNG plots")
    g.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    if fault:
        f = sub.add_argument_group("fault (failover on top of this load)")
        f.add_argument("--fault", choices=FAULTS, default=None,
                       help="at --at seconds: SIGKILL / SIGSTOP / drain edge 1, or freeze "
                       "Redis for --outage seconds (default: none)")
        f.add_argument("--at", type=positive_float, default=3.0,
                       help="seconds into publishing when the fault happens (default: 3)")
        f.add_argument("--outage", type=positive_float, default=2.0,
                       help="redis-stop: seconds Redis stays frozen (default: 2)")


def add_load_timing(sub: argparse.ArgumentParser, duration: float) -> None:
    sub.add_argument("--duration", type=positive_float, default=duration,
                     help=f"seconds of publishing, warm-up included (default: {duration:g})")
    sub.add_argument("--warmup", type=non_negative_float, default=1.0,
                     help="seconds excluded from the figures at the start (default: 1)")
    sub.add_argument("--drain", type=non_negative_float, default=2.0,
                     help="seconds to wait for late messages after the last publish "
                     "(default: 2)")
    sub.add_argument("--payload-size", type=positive_int, default=64,
                     help="payload bytes, at least 16 (default: 64)")


def check_timing(args: argparse.Namespace) -> None:
    if args.warmup >= args.duration:
        raise BenchError("need --duration > --warmup")
    if args.payload_size < 16:
        raise BenchError("--payload-size must be at least 16 bytes (the header)")


def options(args: argparse.Namespace, *, origin: bool = False,
            uplink_rooms: str = "") -> ClusterOptions:
    return ClusterOptions(edges=args.edges, procs=args.procs, runs=args.runs, out=args.out,
                          pin=args.pin, quiet=args.quiet, plot=not args.no_plot,
                          connect_rate=args.connect_rate, origin=origin,
                          uplink_rooms=uplink_rooms)


def fault_of(args: argparse.Namespace) -> Fault | None:
    action = getattr(args, "fault", None)
    if action is None:
        return None
    return Fault(action, args.at, args.outage)


def finish(doc: dict[str, Any], opts: ClusterOptions, rows: list[tuple[str, str]]) -> int:
    """Write JSON + Markdown (printed too) and the plots; return the exit status."""
    from bench import report

    if doc["meta"]["params"].get("fault"):
        rows = [*rows, *FAILOVER_ROWS]
    md = report.markdown(doc, rows)
    json_path, md_path = report.write(doc, opts.out, md)
    print(md)
    print(f"report: {json_path}", file=sys.stderr)
    print(f"summary: {md_path}", file=sys.stderr)
    if opts.plot:
        from bench.plots import MISSING, plot_latency, plot_timeline, pyplot

        if pyplot() is None:
            print(f"note: {MISSING}", file=sys.stderr)

        for png in (plot_latency(doc, json_path.with_suffix(".png")),
                    plot_timeline(doc, json_path.with_name(json_path.stem + "-timeline.png"))):
            if png is not None:
                print(f"plot: {png}", file=sys.stderr)
    return 0
