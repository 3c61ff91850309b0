"""Command line: ``python -m bench SCENARIO [options]`` (also ``edge-relay bench``).

Exit status: 0 success, 1 the benchmark failed to run (a server did not start, a load
process died), 2 a usage error.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError, BenchFailure
from bench.runner import RunOptions
from bench.targets import TARGETS
from bench.validators import non_negative_float as _non_negative_float
from bench.validators import positive_float as _positive_float
from bench.validators import positive_int as _positive_int

DEFAULT_OUT = "bench-results"

#: Scenario modules that register their own sub-command: each has
#: ``register(subparsers)`` that adds a parser with ``func`` set. Add one line here.
SCENARIO_MODULES: tuple[str, ...] = (
    "bench.scenarios.rooms",
    "bench.scenarios.games",
    "bench.scenarios.anomaly",
    "bench.scenarios.telemetry",
    "bench.scenarios.storm",
    "bench.scenarios.functions",
    "bench.scenarios.origin_functions",
    "bench.sweep",
    "bench.recv_path",
)


def _common(sub: argparse.ArgumentParser, default_procs: int | None) -> None:
    g = sub.add_argument_group("run options")
    g.add_argument(
        "--target",
        choices=[*TARGETS, "both", "all"],
        default="both",
        help="server(s) to measure; 'both' runs the baseline and the edge alternately with "
        "the same parameters and reports ratios; 'all' adds edge-local (the edge without "
        "Redis, to show what durability costs), baseline-default (the baseline with "
        "websockets' defaults: compression on, asyncio loop) and nats (the NATS server, Go, "
        "over WebSocket: a compiled broker side by side) (default: both)",
    )
    g.add_argument("--tls", action="store_true",
                   help="measure what TLS costs: run the edge with and without TLS on its "
                   "WebSocket port (targets edge and edge-tls, wss:// with a throw-away "
                   "certificate), alternately, and report edge-tls/edge (--target is ignored)")
    g.add_argument("--runs", type=_positive_int, default=1,
                   help="runs per target; the report shows the median of each figure (default: 1)")
    procs_help = "load-generator processes" + (
        f" (default: {default_procs})" if default_procs else " (default: 1 per 1,000 connections)"
    )
    g.add_argument("--procs", type=_positive_int, default=default_procs, help=procs_help)
    g.add_argument("--pin", action="store_true",
                   help="pin the server to CPU 0 and the load generator (and Redis) to CPU 1")
    g.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                   help="directory for the JSON, Markdown and PNG reports "
                   f"(default: {DEFAULT_OUT})")
    g.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    g.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def build_parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark the edge relay (and a plain websockets baseline) with "
        "open-loop load, HDR latency histograms, server CPU and memory.",
        epilog="Reports: OUT/<scenario>-<timestamp>.json|.md|.png; schema in docs/bench.md.",
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")

    fan = subs.add_parser(
        "fanout",
        help="one room: S subscribers, P publishers, total rate R",
        description="One room, S subscribers, P publishers sending R messages/s in total "
        "on an open-loop schedule. Reports latency from the intended send time, loss, "
        "duplicates, and server CPU per delivered message.",
    )
    fan.add_argument("--subscribers", type=_positive_int, default=50, help="(default: 50)")
    fan.add_argument("--publishers", type=_positive_int, default=5, help="(default: 5)")
    fan.add_argument("--rate", type=_positive_float, default=200.0,
                     help="total publishes/s over all publishers (default: 200)")
    fan.add_argument("--payload-size", type=_positive_int, default=88,
                     help="payload bytes, at least 24 (default: 88)")
    fan.add_argument("--duration", type=_positive_float, default=10.0,
                     help="seconds of publishing, warm-up included (default: 10)")
    fan.add_argument("--warmup", type=_non_negative_float, default=1.0,
                     help="seconds excluded from the figures at the start (default: 1)")
    fan.add_argument("--drain", type=_non_negative_float, default=2.0,
                     help="seconds to wait for late messages after the last publish (default: 2)")
    fan.add_argument("--receiver", choices=["sdk", "lean"], default="sdk",
                     help="edge subscribers: the public SDK, or bench.lean_client (same "
                     "protocol, cheaper receive path, for rates where the SDK load generator "
                     "saturates; the SDK's own figure: recv-path) (default: sdk)")
    fan.add_argument("--transport", choices=["ws", "quic-stream", "quic-datagram"],
                     default="ws",
                     help="edge targets: WebSocket, QUIC with reliable publishes on the "
                     "stream, or QUIC with unreliable publishes sent as datagrams (loss "
                     "allowed and reported); with a QUIC transport --target both means "
                     "the edge alone (the baselines have no QUIC) (default: ws)")
    fan.add_argument("--edge-write-delay-ms", type=_non_negative_float, default=0.0,
                     help="edge targets: collect each client's frames this long before "
                     "writing (the edge's --write-delay-ms: fewer system calls, up to that "
                     "much more latency) (default: 0)")
    fan.add_argument("--edge-write-interval-ms", type=_non_negative_float, default=0.0,
                     help="edge targets: write to a client at most once per this interval "
                     "(the edge's --write-interval-ms: no added latency at low rates, fewer "
                     "system calls at high ones) (default: 0)")
    _common(fan, 1)
    fan.set_defaults(func=_cmd_fanout)

    con = subs.add_parser(
        "connections",
        help="memory per idle connection and connect rate",
        description="Open N idle connections in batches at a bounded connect rate; report "
        "the server's RSS before and after (bytes per connection) and the connect rate.",
    )
    con.add_argument("--count", type=_positive_int, default=2000,
                     help="idle connections to open (default: 2000)")
    con.add_argument("--batch", type=_positive_int, default=100,
                     help="connections opened concurrently per batch (default: 100)")
    con.add_argument("--connect-rate", type=_positive_float, default=1000.0,
                     help="upper bound on new connections/s over all processes (default: 1000)")
    con.add_argument("--settle", type=_non_negative_float, default=1.0,
                     help="seconds to wait after the last connect before sampling RSS (default: 1)")
    _common(con, None)
    con.set_defaults(func=_cmd_connections)

    fo = subs.add_parser(
        "failover",
        help="clients of an edge that is killed, frozen or drained under load",
        description="Clients on one edge of a local cluster while publishers on the other "
        "edges keep publishing; the edge is SIGKILLed, SIGSTOPped or drained (SIGTERM). "
        "Reports time until every client is served again, the gap each client saw, "
        "and lost / duplicated reliable messages.",
    )
    fo.add_argument("--action", choices=["kill", "stop", "drain", "redis-stop"],
                    default="kill",
                    help="what happens to edge 1 (redis-stop: Redis frozen for --outage s; "
                    "needs --load other than default) (default: kill)")
    fo.add_argument("--load", choices=["default", "fanout", "rooms", "telemetry"],
                    default="default",
                    help="the load under the fault: 'default' is this command's own (clients "
                    "on edge 1, publishers elsewhere); 'fanout' (--clients subscribers on edge "
                    "1, --publishers elsewhere, one room per publisher up to --rooms), 'rooms' "
                    "(--clients players in --rooms rooms spread over the edges, --rate "
                    "publishes/s in total) or 'telemetry' (--clients devices on edge 1, "
                    "--rate samples/s, origin running) run on the cluster-scenario engine, "
                    "with timelines and plots (default: default)")
    fo.add_argument("--outage", type=_positive_float, default=2.0,
                    help="redis-stop: seconds Redis stays frozen (default: 2)")
    fo.add_argument("--procs", type=_positive_int, default=1,
                    help="load processes (--load other than default) (default: 1)")
    fo.add_argument("--pin", action="store_true",
                    help="pin edges to CPU 0, the rest to CPU 1 (--load other than default)")
    fo.add_argument("--no-plot", action="store_true", help="no PNG plots")
    fo.add_argument("--clients", type=_positive_int, default=200,
                    help="clients on the edge (default: 200)")
    fo.add_argument("--rooms", type=_positive_int, default=20, help="(default: 20)")
    fo.add_argument("--publishers", type=_positive_int, default=4, help="(default: 4)")
    fo.add_argument("--rate", type=_positive_float, default=200.0,
                    help="publishes/s in total (default: 200)")
    fo.add_argument("--edges", type=_positive_int, default=3, help="(default: 3)")
    fo.add_argument("--at", type=_positive_float, default=3.0,
                    help="seconds into the run when the action happens (default: 3)")
    fo.add_argument("--duration", type=_positive_float, default=8.0,
                    help="seconds of publishing (default: 8)")
    fo.add_argument("--connect-rate", type=_positive_float, default=2000.0,
                    help="the surviving edges' connection-rate limit (default: 2000)")
    fo.add_argument("--runs", type=_positive_int, default=1, help="(default: 1)")
    fo.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                    help=f"report directory (default: {DEFAULT_OUT})")
    fo.add_argument("--quiet", action="store_true", help="no progress on stderr")
    fo.set_defaults(func=_cmd_failover)

    import importlib

    for module in SCENARIO_MODULES:
        importlib.import_module(module).register(subs)

    from bench.scenarios.iot import add_parser as add_iot_parser

    add_iot_parser(subs, DEFAULT_OUT)

    tr = subs.add_parser(
        "transports",
        help="WebSocket vs QUIC stream vs QUIC datagram: RTT, saturation, handshake CPU",
        description="One edge on both transports; per mode: RTT p50/p99, deliveries/s at "
        "saturation with edge CPU per delivery, edge CPU per handshake; median of --runs.",
    )
    tr.add_argument("--rtt-samples", type=_positive_int, default=2000, help="(default: 2000)")
    tr.add_argument("--subscribers", type=_positive_int, default=20, help="(default: 20)")
    tr.add_argument("--messages", type=_positive_int, default=5000,
                    help="messages published in the saturation phase (default: 5000)")
    tr.add_argument("--window", type=_positive_int, default=500,
                    help="unconfirmed reliable publishes at most (default: 500)")
    tr.add_argument("--payload-size", type=_positive_int, default=64, help="(default: 64)")
    tr.add_argument("--handshakes", type=_positive_int, default=100, help="(default: 100)")
    tr.add_argument("--runs", type=_positive_int, default=3, help="(default: 3)")
    tr.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                    help=f"report directory (default: {DEFAULT_OUT})")
    tr.add_argument("--quiet", action="store_true", help="no progress on stderr")
    tr.set_defaults(func=_cmd_transports)

    cmp = subs.add_parser(
        "compare",
        help="show the change of every figure between two reports",
        description="Print the change (absolute and %%) of every numeric figure, per target, "
        "between two JSON reports of the same scenario.",
    )
    cmp.add_argument("old", type=Path, help="the older report (JSON)")
    cmp.add_argument("new", type=Path, help="the newer report (JSON)")
    cmp.add_argument("--changed-only", action="store_true",
                     help="list only the figures that changed")
    cmp.set_defaults(func=_cmd_compare)

    plo = subs.add_parser(
        "plot",
        help="one PNG of the latency percentiles of several reports",
        description="Latency percentiles (medians) of several JSON reports side by side, "
        "one group per scenario and target (or transport).",
    )
    plo.add_argument("reports", type=Path, nargs="+", help="JSON reports")
    plo.add_argument("-o", "--output", type=Path, default=Path("latency-by-scenario.png"),
                     help="PNG to write (default: latency-by-scenario.png)")
    plo.set_defaults(func=_cmd_plot)
    return parser


def _options(args: argparse.Namespace, procs: int) -> RunOptions:
    targets = {"both": ("baseline", "edge"), "all": TARGETS}.get(args.target, (args.target,))
    if args.tls:
        targets = ("edge", "edge-tls")
    return RunOptions(
        targets=targets,
        runs=args.runs,
        procs=procs,
        pin=args.pin,
        out=args.out,
        quiet=args.quiet,
        plot=not args.no_plot,
        edge_args=_edge_args(args),
    )


def _edge_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The edge options a scenario's ``--edge-*`` flags ask for."""
    out: list[str] = []
    for flag, attr in (("--write-delay-ms", "edge_write_delay_ms"),
                       ("--write-interval-ms", "edge_write_interval_ms")):
        value = getattr(args, attr, 0.0)
        if value:
            out += [flag, f"{value:g}"]
    return tuple(out)


def _finish(doc: dict[str, Any], options: RunOptions, rows: list[tuple[str, str]]) -> int:
    from bench import report

    md = report.markdown(doc, rows)
    json_path, md_path = report.write(doc, options.out, md)
    print(md)
    print(f"report: {json_path}", file=sys.stderr)
    print(f"summary: {md_path}", file=sys.stderr)
    if options.plot:
        from bench.plots import MISSING, plot_latency, pyplot

        if pyplot() is None:
            print(f"note: {MISSING}", file=sys.stderr)

        png = plot_latency(doc, json_path.with_suffix(".png"))
        if png is not None:
            print(f"plot: {png}", file=sys.stderr)
    return 0


def _cmd_fanout(args: argparse.Namespace) -> int:
    from bench.scenarios.fanout import ROWS, run_fanout
    from bench.scenarios.fanout_load import FanoutParams

    params = FanoutParams(
        subscribers=args.subscribers,
        publishers=args.publishers,
        rate=args.rate,
        payload_size=args.payload_size,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        receiver=args.receiver,
        transport=args.transport,
    )
    if args.transport != "ws" and args.receiver == "lean":
        raise BenchError("--receiver lean speaks WebSocket only: use --receiver sdk with "
                         f"--transport {args.transport}")
    if args.tls and args.transport != "ws":
        raise BenchError("--tls compares wss:// with ws://: QUIC always runs TLS 1.3 "
                         "(compare QUIC with WebSocket in `bench transports`)")
    options = _options(args, args.procs)
    if args.transport != "ws":
        if args.target == "both":
            # The baselines have no QUIC: compare the edge with and without Redis instead.
            options = replace(options, targets=("edge",))
        options = replace(options, quic=True)
    return _finish(run_fanout(params, options), options, ROWS)


def _cmd_connections(args: argparse.Namespace) -> int:
    from bench.scenarios.connections import ROWS, run_connections
    from bench.scenarios.connections_load import ConnectionsParams

    params = ConnectionsParams(
        count=args.count,
        batch=args.batch,
        connect_rate=args.connect_rate,
        settle=args.settle,
    )
    procs = args.procs or max(1, -(-args.count // 1000))
    options = _options(args, procs)
    return _finish(run_connections(params, options), options, ROWS)


def _cmd_failover(args: argparse.Namespace) -> int:
    from bench.scenarios.failover import FailoverParams, run_failover_cli

    if args.edges < 2:
        raise BenchError("--edges must be at least 2 (clients need somewhere to go)")
    if args.rooms > 64:
        raise BenchError("--rooms must be at most 64 (publishers join every room)")
    if args.at >= args.duration:
        raise BenchError("--at must be before the end of --duration")
    if args.load != "default":
        from bench.scenarios.failover_loads import run_failover_load

        return run_failover_load(args)
    if args.action == "redis-stop":
        raise BenchError("--action redis-stop needs --load fanout, rooms or telemetry")
    params = FailoverParams(action=args.action, clients=args.clients, rooms=args.rooms,
                            publishers=args.publishers, rate=args.rate, edges=args.edges,
                            at=args.at, duration=args.duration, connect_rate=args.connect_rate)
    return run_failover_cli(params, args.runs, args.out, args.quiet)


def _cmd_plot(args: argparse.Namespace) -> int:
    from bench import report
    from bench.plots import MISSING, plot_reports

    docs = [report.load(p) for p in args.reports]
    png = plot_reports(docs, args.output)
    if png is None:
        raise BenchFailure(MISSING)
    print(f"plot: {png}", file=sys.stderr)
    return 0


def _cmd_transports(args: argparse.Namespace) -> int:
    from bench.scenarios.transports import TransportsParams, run_transports_cli

    params = TransportsParams(rtt_samples=args.rtt_samples, subscribers=args.subscribers,
                              messages=args.messages, window=args.window,
                              payload_size=args.payload_size, handshakes=args.handshakes,
                              runs=args.runs)
    return run_transports_cli(params, args.out, args.quiet)


def _cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare import compare

    print(compare(args.old, args.new, show_all=not args.changed_only), end="")
    return 0


def main(argv: list[str] | None = None, *, prog: str = "python -m bench") -> int:
    """Run the bench CLI with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the servers, Redis and
    # load processes this run started are stopped instead of left running.
    old_term = _on_sigterm()
    try:
        return func(args)
    except _Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143
    except BenchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except BenchFailure as exc:
        print(f"{prog}: benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


class _Terminated(BaseException):
    """SIGTERM arrived: unwind (running every cleanup) and exit 143."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def _on_sigterm() -> Any:
    """Make SIGTERM raise :class:`_Terminated`; return the previous handler (None if
    not in the main thread, where signal handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)
