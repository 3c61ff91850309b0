"""``edge-relay``: run an edge, a local cluster, the demo, the origin, benchmarks; mint tokens.

Every command has ``--help``.  User mistakes (bad flags, no Redis found, a
port in use) print one clear line and exit 2; no traceback.

This launcher gathers the commands of every part of the project, so it lives in the
local wing (it may import the origin and the benchmarks; the edge's product code may
not).  The edge's own commands (``edge``, ``token``, ``cert``) are in
:mod:`edge_node.cli`.
"""

from __future__ import annotations

import argparse
import sys

from edge_node.cli import UserError, add_edge_commands

__all__ = ["main", "build_parser"]


def _cmd_up(a: argparse.Namespace) -> int:
    from edge_node.local.cluster import cmd_up

    return cmd_up(a)


def _cmd_demo(a: argparse.Namespace) -> int:
    from edge_node.local.demo import cmd_demo

    return cmd_demo(a)


def _cmd_bench(rest: list[str]) -> int:
    from bench.cli import main as bench_main

    return bench_main(rest, prog="edge-relay bench")


def _cmd_origin(rest: list[str]) -> int:
    from origin.__main__ import main as origin_main

    return int(origin_main(rest, prog="edge-relay origin") or 0)


def build_parser() -> argparse.ArgumentParser:
    """The full ``edge-relay`` argument parser."""
    p = argparse.ArgumentParser(
        prog="edge-relay",
        description="Edge relay for real-time games and IoT.  Commands: edge, up, demo, "
        "token, cert, origin, bench.  Configuration: flags, or EDGE_RELAY_* and REDIS_URL "
        "environment variables (see docs/configuration.md).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    add_edge_commands(sub)

    pu = sub.add_parser("up", help="run a local cluster (embedded Redis + N edges)",
                        description="Start Redis (REDIS_URL, else the embedded server) and N "
                        "edges on loopback; Ctrl-C stops all.")
    pu.add_argument("--edges", type=int, default=3, help="number of edges (default 3)")
    pu.add_argument("--base-port", type=int, default=8701, help="first edge port (default 8701)")
    pu.add_argument("--tls", action="store_true",
                    help="serve wss:// (and https:// for /healthz, /metrics) with a "
                    "development certificate whose file is printed: give it to clients "
                    "as their CA file")
    pu.set_defaults(func=_cmd_up)

    pd = sub.add_parser("demo", help="run the demo: a cluster plus simulated players",
                        description="Start a local cluster of edges with embedded Redis, run "
                        "simulated players in rooms, print a summary (and JSON with --json).")
    pd.add_argument("--edges", type=int, default=3, help="edges (default 3)")
    pd.add_argument("--players", type=int, default=50, help="simulated players (default 50)")
    pd.add_argument("--rooms", type=int, default=10, help="rooms (default 10)")
    pd.add_argument("--rate", type=float, default=20.0, help="publishes/s per player (default 20)")
    pd.add_argument("--duration", type=float, default=20.0, help="seconds (default 20)")
    pd.add_argument("--devices", type=int, default=500,
                    help="simulated IoT devices at 10 samples/s each (default 500; 0 = none)")
    pd.add_argument("--json", metavar="PATH", help="also write the summary as JSON to PATH")
    pd.add_argument("--arena-bots", type=int, default=6,
                    help="bots per authoritative arena (a game room run by its owner edge) "
                    "at 10 inputs/s each: one arena lives on the edge that is drained, one "
                    "on the edge that is killed (default 6; 0 = none)")
    pd.add_argument("--rpc-callers", type=int, default=10,
                    help="players that also call the leaderboard functions on their edge "
                    "(a score a second, the board every other second; default 10, 0 = none)")
    pd.add_argument("--tls", action="store_true",
                    help="the edges serve wss:// with a development certificate (the "
                    "simulated clients trust it)")
    pd.add_argument("--no-spectators", action="store_true",
                    help="leave out the two spectators that stop reading for a third of "
                    "the run (the 'latest' and 'drop' delivery policies)")
    pd.add_argument("--no-kill", action="store_true",
                    help="do not SIGKILL an edge half-way (steady state only)")
    pd.set_defaults(func=_cmd_demo)

    po = sub.add_parser("origin", help="run origin workers and the HTTP API "
                        "(see `edge-relay origin --help`)", add_help=False)
    po.add_argument("rest", nargs=argparse.REMAINDER)
    po.set_defaults(func=lambda a: _cmd_origin(list(a.rest)))
    pb = sub.add_parser("bench", help="run a benchmark scenario (see `edge-relay bench --help`)",
                        add_help=False)
    pb.add_argument("rest", nargs=argparse.REMAINDER)
    pb.set_defaults(func=lambda a: _cmd_bench(list(a.rest)))
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edge-relay`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":  # everything after it is the benchmark CLI's
        return _cmd_bench(argv[1:])
    if argv and argv[0] == "origin":
        return _cmd_origin(argv[1:])
    try:
        parser = build_parser()  # reads EDGE_RELAY_* defaults: a bad one is a UserError
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"edge-relay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
