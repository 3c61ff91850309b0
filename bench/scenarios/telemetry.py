"""``telemetry``: D devices at r samples/s in total through one edge to the origin.

Two paths (``--path``):

- ``room`` (default): every device is an SDK client (``kind=device``) on edge 1,
  publishing each sample as a reliable message into its own room ``tele-<d>``; the
  edges forward those rooms to the origin (``--uplink-rooms tele-*``): one uplink
  entry per sample. Each publish costs the SDK ~35-40 µs of CPU, so 20,000
  samples/s take two load processes (the default, ``--procs 2``; the load
  generator's CPU warning says when they are short).
- ``device``: devices send TELEMETRY frames of ``--batch`` samples (the IoT path,
  :mod:`bench.scenarios.telemetry_devices`); the edge aggregates them per
  ``--iot-window-ms`` window and sends one rollup entry per device and window.

Both report the edge→origin lag of the uplink entries the origin applied from the
start of the window (from the edge's uplink submit to the origin's apply, Redis
clock; the origin's own 10 % buckets, see ``origin.view.lag_quantiles``), how much
the origin applied against what the edge acknowledged, and the CPU of the edge,
Redis, the origin and the load generator. ``python -m bench.uplink_bench lag``
measures the uplink alone (no clients, no edge), for reference.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
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
    ("edge→origin lag p99.9 ms", "origin.lag_ms.p99.9"),
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
    sp.add_argument("--path", choices=["room", "device"], default="room",
                    help="room: one reliable room publish (one uplink entry) per sample; "
                    "device: TELEMETRY frames of --batch samples through the IoT pipeline "
                    "(default: room)")
    sp.add_argument("--batch", type=positive_int, default=100,
                    help="samples per TELEMETRY frame with --path device (default: 100)")
    sp.add_argument("--iot-window-ms", type=positive_int, default=1000,
                    help="the edge's aggregation window with --path device (default: 1000)")
    add_load_timing(sp, 10.0)
    # Two load processes: a reliable publish costs the SDK ~35-40 µs of CPU, so one
    # process is saturated near 20,000/s.
    add_cluster_options(sp, edges=1, procs=2)
    sp.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    check_timing(args)
    opts = options(args, origin=True, uplink_rooms=UPLINK_ROOMS)
    fault = fault_of(args)
    if args.path == "device":
        return _cmd_devices(args, opts, fault)
    validate(opts, fault, args.duration)
    p = {"devices": args.devices, "rate": args.rate, "duration": args.duration,
         "warmup": args.warmup, "drain": args.drain, "payload_size": args.payload_size}
    doc = run_cluster("telemetry", p, layout(args.devices, args.rate, p), opts, fault)
    return finish(doc, opts, TELEMETRY_ROWS)


def _cmd_devices(args: argparse.Namespace, opts: Any, fault: Any) -> int:
    from bench.errors import BenchError
    from bench.scenarios.telemetry_devices import DEVICE_ROWS, run_devices

    if fault is not None:
        raise BenchError("--fault needs --path room")
    if args.edges != 1:
        raise BenchError("--path device runs one edge (--edges 1)")
    if args.iot_window_ms < 10:
        raise BenchError("--iot-window-ms must be at least 10")
    p = {"devices": args.devices, "rate": args.rate, "batch": args.batch,
         "duration": args.duration, "warmup": args.warmup, "drain": args.drain}
    doc = run_devices(p, opts, args.iot_window_ms)
    # No latency histogram or timeline to plot on this path.
    return finish(doc, replace(opts, plot=False), DEVICE_ROWS)
