"""``storm``: N clients of an edge that dies reconnect at once.

``--clients`` clients sit on edge 1 in ``--rooms`` rooms; one publisher per room on
the other edges keeps publishing reliable messages (``--rate`` in total). At
``--at`` seconds edge 1 is SIGKILLed: every client reconnects (full-jitter backoff)
to the surviving edges, which admit at most ``--connect-rate`` new connections/s
each (token bucket, burst = rate) and refuse the rest with 503 and a retry hint.
Reports the time until every client is served again, the most resumes in any one
second against what the limit admits (2 x rate x surviving edges), the 503 refusals,
and lost / duplicated messages. Clients connect at 80 % of the limit while setting up.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.scenarios.cluster import Fault, run_cluster, validate
from bench.scenarios.cluster_cli import (
    CLUSTER_ROWS,
    add_cluster_options,
    add_load_timing,
    check_timing,
    finish,
    options,
)
from bench.scenarios.layouts import fanout_layout
from bench.validators import positive_float, positive_int

STORM_ROWS: list[tuple[str, str]] = [
    ("peak resumes in any 1 s", "failover.resumes_per_s_peak"),
    ("most the survivors may admit in 1 s (burst + rate: 2 x rate x edges)",
     "failover.admit_bound_1s"),
    *[r for r in CLUSTER_ROWS if r[1].startswith(("messages.", "latency_us.p99",
                                                  "server.", "loadgen.", "host."))],
]


def register(subs: Any) -> None:
    sp = subs.add_parser(
        "storm", help="N clients of a dead edge reconnecting at once",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--clients", type=positive_int, default=1000, help="(default: 1000)")
    sp.add_argument("--rooms", type=positive_int, default=20, help="(default: 20)")
    sp.add_argument("--rate", type=positive_float, default=100.0,
                    help="publishes/s in total, one publisher per room (default: 100)")
    sp.add_argument("--at", type=positive_float, default=2.0,
                    help="seconds into publishing when edge 1 is killed (default: 2)")
    add_load_timing(sp, 8.0)
    add_cluster_options(sp, edges=3, procs=1, fault=False)
    sp.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    check_timing(args)
    opts = options(args)
    fault = Fault("kill", args.at)
    validate(opts, fault, args.duration)
    p = {"clients": args.clients, "rooms": args.rooms, "rate": args.rate,
         "duration": args.duration, "warmup": args.warmup, "drain": args.drain,
         "payload_size": args.payload_size, "reliable": True}
    doc = run_cluster("storm", p, fanout_layout(args.clients, args.rooms, args.rooms,
                                                args.rate, p), opts, fault)
    for run in doc["targets"]["edge"]["runs"]:
        # Token bucket per edge: burst = rate, so at most 2 x rate in any one second.
        run["failover"]["admit_bound_1s"] = 2 * args.connect_rate * (args.edges - 1)
        if run["failover"]["resumes_per_s_peak"] > run["failover"]["admit_bound_1s"]:
            run["warnings"].append("more resumes in one second than the rate limit admits")
    from bench import report

    doc["targets"]["edge"]["median"] = report.medians(doc["targets"]["edge"]["runs"])
    return finish(doc, opts, STORM_ROWS)
