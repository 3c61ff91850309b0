"""``failover --load fanout|rooms|telemetry``: the fault on top of a cluster scenario."""

from __future__ import annotations

import argparse

from bench.errors import BenchError
from bench.scenarios.cluster import ClusterOptions, Fault, run_cluster, validate
from bench.scenarios.cluster_cli import CLUSTER_ROWS, finish
from bench.scenarios.layouts import fanout_layout
from bench.scenarios.rooms import layout as rooms_layout
from bench.scenarios.telemetry import TELEMETRY_ROWS, UPLINK_ROOMS
from bench.scenarios.telemetry import layout as telemetry_layout


def run_failover_load(args: argparse.Namespace) -> int:
    """Map the failover options onto the chosen load and run it with the fault."""
    telemetry = args.load == "telemetry"
    opts = ClusterOptions(edges=args.edges, procs=args.procs, runs=args.runs, out=args.out,
                          pin=args.pin, quiet=args.quiet, plot=not args.no_plot,
                          connect_rate=args.connect_rate, origin=telemetry,
                          uplink_rooms=UPLINK_ROOMS if telemetry else "")
    fault = Fault(args.action, args.at, args.outage)
    validate(opts, fault, args.duration)
    p = {"load": args.load, "clients": args.clients, "rooms": args.rooms,
         "publishers": args.publishers, "rate": args.rate, "duration": args.duration,
         "warmup": min(1.0, args.at / 2), "drain": 2.0, "payload_size": 64,
         "reliable": True}
    rows = CLUSTER_ROWS
    if args.load == "fanout":
        lay = fanout_layout(args.clients, args.publishers, args.rooms, args.rate, p)
    elif args.load == "rooms":
        if args.clients < 2 * args.rooms:
            raise BenchError("--load rooms needs --clients >= 2 x --rooms")
        lay = rooms_layout(args.clients, args.rooms, args.rate / args.clients, p)
    else:
        lay = telemetry_layout(args.clients, args.rate, p)
        rows = TELEMETRY_ROWS
    doc = run_cluster(f"failover-{args.load}", p, lay, opts, fault)
    status = finish(doc, opts, rows)
    bad = [r for r in doc["targets"]["edge"]["runs"]
           if r["messages"]["lost"] or r["messages"]["duplicates"]
           or r["failover"]["served_again"] < r["failover"]["affected_clients"]]
    return 1 if bad else status
