"""``rooms``: many small game rooms, players spread over several edges.

Player ``i`` is in room ``i mod R`` and connects to edge ``(i div R) mod E``, so the
players of one room sit on different edges (the room's owner fans out locally and
the other edges get its messages through Redis). Every player publishes at ``--hz``
and receives the other players of its room. Reports latency overall and per room
(median and worst room p99), loss and duplicates per room, the edges' CPU.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.cluster_load import ClientSpec, ClusterPlan
from bench.errors import BenchError
from bench.scenarios.cluster import run_cluster, validate
from bench.scenarios.cluster_cli import (
    CLUSTER_ROWS,
    add_cluster_options,
    add_load_timing,
    check_timing,
    fault_of,
    finish,
    options,
)
from bench.validators import positive_float, positive_int


def layout(players: int, rooms: int, hz: float, p: dict[str, Any]) -> Any:
    """A :data:`~bench.scenarios.cluster.Layout` for the rooms scenario."""

    def make(urls: tuple[str, ...], secret: bytes) -> ClusterPlan:
        e = len(urls)
        clients = tuple(
            ClientSpec(idx=i, home=(i // rooms) % e, room=f"room-{i % rooms}", receives=True,
                       publisher=i)
            for i in range(players))
        return ClusterPlan(urls=urls, secret=secret, clients=clients, publishers=players,
                           hz=hz, duration=p["duration"], warmup=p["warmup"],
                           drain=p["drain"], payload_size=p["payload_size"],
                           reliable=p["reliable"])

    return make


def register(subs: Any) -> None:
    sp = subs.add_parser(
        "rooms", help="many small game rooms, players spread over several edges",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--players", type=positive_int, default=1000, help="(default: 1000)")
    sp.add_argument("--rooms", type=positive_int, default=250, help="(default: 250)")
    sp.add_argument("--hz", type=positive_float, default=30.0,
                    help="publishes per player per second (default: 30)")
    sp.add_argument("--unreliable", action="store_true",
                    help="publish unreliable (latest-value) messages instead of reliable ones")
    add_load_timing(sp, 10.0)
    add_cluster_options(sp, edges=3, procs=1)
    sp.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    check_timing(args)
    if args.rooms > args.players:
        raise BenchError("--rooms must not exceed --players")
    if args.players // args.rooms < 2:
        raise BenchError("need at least 2 players per room (--players >= 2 x --rooms)")
    opts = options(args)
    fault = fault_of(args)
    validate(opts, fault, args.duration)
    p = {"players": args.players, "rooms": args.rooms, "hz": args.hz,
         "reliable": not args.unreliable, "duration": args.duration, "warmup": args.warmup,
         "drain": args.drain, "payload_size": args.payload_size}
    doc = run_cluster("rooms", p, layout(args.players, args.rooms, args.hz, p), opts, fault)
    return finish(doc, opts, CLUSTER_ROWS)
