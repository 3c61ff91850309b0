"""``telemetry``: D devices at r samples/s each through one edge to the origin.

Every device is an SDK client (``kind=device``) on edge 1, publishing reliable
messages into its own room ``tele-<d>``; the edges forward those rooms to the origin
(``--uplink-rooms tele-*``), whose workers apply them. Reports the edge→origin lag
(from the edge's uplink submit to the origin's apply; the origin's own 10 % buckets,
see ``origin.view.lag_quantiles``), how many samples the origin applied against how
many the edge acknowledged, and the CPU of the edge, Redis and the origin.

Until device telemetry frames land, this uses the path that exists: publishes in
rooms marked for the origin. ``python -m origin.uplink_bench lag`` measures the
uplink alone (no clients, no edge), for reference.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.cluster_load import ClientSpec, ClusterPlan
from bench.scenarios.cluster import run_cluster, validate
from bench.scenarios.cluster_cli import (
    add_cluster_options,
    add_load_timing,
    check_timing,
    fault_of,
    finish,
    options,
)
from bench.validators import positive_float, positive_int

UPLINK_ROOMS = "tele-*"

TELEMETRY_ROWS: list[tuple[str, str]] = [
    ("offered samples/s", "throughput.offered_publishes_per_s"),
    ("samples sent", "messages.sent"),
    ("samples acknowledged", "messages.publish_acked"),
    ("publish errors", "messages.publish_errors"),
    ("edge→origin lag p50 ms", "origin.lag_ms.p50"),
    ("edge→origin lag p90 ms", "origin.lag_ms.p90"),
    ("edge→origin lag p99 ms", "origin.lag_ms.p99"),
    ("applied at the origin", "origin.room_events_applied"),
    ("acknowledged but not applied", "origin.missing"),
    ("sent but not applied (after the origin stalled or 60 s)", "origin.not_applied_of_sent"),
    ("origin catch-up after the run (s)", "origin.catch_up_s"),
    ("edge CPU % of a core", "server.cpu_percent"),
    ("redis CPU %", "redis.cpu_percent"),
    ("origin CPU % (workers + API)", "origin.cpu_percent"),
    ("load generator max CPU % (one process)", "loadgen.cpu_percent_max"),
    ("load generator CPU µs per publish", "loadgen.cpu_us_per_publish"),
    ("other processes' CPU % (host noise)", "host.other_cpu_percent"),
]


def layout(devices: int, rate: float, p: dict[str, Any]) -> Any:
    def make(urls: tuple[str, ...], secret: bytes) -> ClusterPlan:
        clients = tuple(ClientSpec(idx=d, home=0, room=f"tele-{d}", receives=False,
                                   publisher=d, kind="device") for d in range(devices))
        return ClusterPlan(urls=urls, secret=secret, clients=clients, publishers=devices,
                           hz=rate / devices, duration=p["duration"], warmup=p["warmup"],
                           drain=p["drain"], payload_size=p["payload_size"], reliable=True)

    return make


def register(subs: Any) -> None:
    sp = subs.add_parser(
        "telemetry", help="D devices at r samples/s through one edge to the origin",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--devices", type=positive_int, default=1000, help="(default: 1000)")
    sp.add_argument("--rate", type=positive_float, default=20_000.0,
                    help="samples/s over all devices (default: 20000)")
    add_load_timing(sp, 10.0)
    add_cluster_options(sp, edges=1, procs=1)
    sp.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    check_timing(args)
    opts = options(args, origin=True, uplink_rooms=UPLINK_ROOMS)
    fault = fault_of(args)
    validate(opts, fault, args.duration)
    p = {"devices": args.devices, "rate": args.rate, "duration": args.duration,
         "warmup": args.warmup, "drain": args.drain, "payload_size": args.payload_size}
    doc = run_cluster("telemetry", p, layout(args.devices, args.rate, p), opts, fault)
    return finish(doc, opts, TELEMETRY_ROWS)
