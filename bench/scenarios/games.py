"""``games``: authoritative game rooms on the edge: R rooms x P players, the arena's
handler ticking at its rate on each room's owner, every player steering.

Starts a local cluster (embedded Redis, E edges with ``--room-handler`` for the arena),
then load-generator processes whose SDK clients join the rooms (player ``j`` of room
``r`` on edge ``(r + j) mod E``) and send a ``move`` input ``--input-hz`` times a
second each, mirroring the state from ROOM_STATE / ROOM_PATCH frames.  After the
warm-up it reads the edges' ``/metrics`` and CPU, and again after ``--duration``:

- tick jitter p50/p99 (how late ticks start against their grid; histogram bucket
  bounds) and tick time p99;
- edge CPU per room-tick and in all (share of one core);
- patch bytes per player per second, against what sending every player its whole
  view at every patch would cost (the baseline, measured in the same run);
- ticks skipped, inputs sent and acknowledged, resyncs (patches that did not follow).

``--pin`` puts the edges on CPU 0 and the load generators on the others.

``--chaos kill|drain`` (2 edges or more) hits the first edge half-way through the
measured window: SIGKILL (a neighbour restores its rooms from their snapshots and the
inputs after them) or SIGTERM (a drain: its rooms move live with their leases).  For
the rooms that edge owned (room ``r`` is owned by edge ``r mod E``) it reports what
their players saw: the time until the room ticked again, the longest silence of a
player that stayed on its edge and of one that had to move, the ticks run again; for
every player, inputs acknowledged but not taken (lost) and taken twice (the arena
counts each avatar's inputs); and from the edges, restore time (p50/p99), entries
replayed, snapshot size and capture time.  Every client knows every edge.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.errors import BenchError
from bench.procstats import can_pin, pin_pid, sample
from bench.validators import positive_float, positive_int
from edge_node.local.scrape import bucket_quantile_ms, continuity_figures, scrape_metrics

__all__ = ["register", "run_games", "ROWS"]

ARENA = "arena-*=edge_node.local.arena:Arena"
ROWS = [
    ("tick jitter p50 (ms, bucket bound)", "tick_jitter_p50_ms"),
    ("tick jitter p99 (ms, bucket bound)", "tick_jitter_p99_ms"),
    ("tick time p99 (ms, bucket bound)", "tick_time_p99_ms"),
    ("room-ticks per second", "ticks_per_s"),
    ("edge CPU per room-tick (µs)", "edge_cpu_us_per_room_tick"),
    ("edge CPU (% of one core)", "edge_cpu_percent"),
    ("patch bytes per player per s", "patch_bytes_per_player_s"),
    ("full-state bytes per player per s (baseline)", "full_bytes_per_player_s"),
    ("bandwidth saving (x)", "bandwidth_saving"),
    ("ticks skipped", "ticks_skipped"),
    ("inputs per second", "inputs_per_s"),
    ("inputs acknowledged (%)", "inputs_acked_percent"),
    ("resyncs", "resyncs"),
    ("load generators' CPU (% of one core, summed)", "loadgen_cpu_percent"),
]
#: Rows added with --chaos.
CHAOS_ROWS = [
    ("rooms hit (owned by the edge hit)", "rooms_hit"),
    ("ticking again after the hit, median (s)", "ticked_again_p50_s"),
    ("ticking again after the hit, worst room (s)", "ticked_again_max_s"),
    ("longest silence, players that stayed (ms)", "stay_gap_max_ms"),
    ("longest silence, players that moved (ms)", "moved_gap_max_ms"),
    ("longest silence in the 5 s before the hit (ms, baseline)", "gap_before_max_ms"),
    ("ticks run again, worst room", "ticks_rerun_max"),
    ("inputs acknowledged but not taken (lost)", "inputs_lost"),
    ("inputs taken twice", "inputs_twice"),
    ("restores", "restores"),
    ("restore time p50 (ms, bucket bound)", "restore_p50_ms"),
    ("restore time p99 (ms, bucket bound)", "restore_p99_ms"),
    ("entries replayed", "replayed_entries"),
    ("rooms moved in live (a drain's final snapshot)", "moved_in"),
    ("snapshot bytes (last, compressed)", "snapshot_bytes"),
    ("snapshot capture + seal (ms, last)", "capture_ms"),
]


def register(subs: Any) -> None:
    sp = subs.add_parser(
        "games", help="authoritative game rooms: tick jitter, CPU per room-tick, patch bytes",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--rooms", type=positive_int, default=100, help="(default: 100)")
    sp.add_argument("--players", type=positive_int, default=10,
                    help="players per room (default: 10)")
    sp.add_argument("--edges", type=positive_int, default=1, help="(default: 1)")
    sp.add_argument("--input-hz", type=positive_float, default=5.0,
                    help="inputs per player per second (default: 5)")
    sp.add_argument("--duration", type=positive_float, default=15.0,
                    help="measured seconds (default: 15)")
    sp.add_argument("--warmup", type=positive_float, default=5.0,
                    help="seconds after every player joined, before measuring (default: 5)")
    sp.add_argument("--procs", type=positive_int, default=0,
                    help="load-generator processes (default: one per 500 players)")
    sp.add_argument("--runs", type=positive_int, default=1, help="(default: 1)")
    sp.add_argument("--chaos", choices=("none", "kill", "drain"), default="none",
                    help="SIGKILL or drain (SIGTERM) the first edge half-way: rooms survive "
                    "(needs --edges 2 or more; default: none)")
    sp.add_argument("--pin", action="store_true",
                    help="edges on CPU 0, load generators on the other CPUs")
    sp.add_argument("--out", type=Path, default=Path("bench-results"),
                    help="report directory (default: bench-results)")
    sp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sp.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    if args.players < 1 or args.rooms * args.players > 5000:
        raise BenchError("--rooms x --players must be at most 5000")
    if args.pin and not can_pin():
        raise BenchError("--pin needs at least 2 CPUs and sched_setaffinity")
    if args.chaos != "none" and args.edges < 2:
        raise BenchError(f"--chaos {args.chaos} needs --edges 2 or more (a neighbour to "
                         "take the rooms)")
    params = {"rooms": args.rooms, "players": args.players, "edges": args.edges,
              "input_hz": args.input_hz, "duration": args.duration, "warmup": args.warmup,
              "pin": args.pin, "chaos": args.chaos}
    procs = args.procs or max(1, -(-args.rooms * args.players // 500))
    runs = [run_games(params, procs, args.quiet) for _ in range(args.runs)]
    warnings = sorted({w for r in runs for w in r.pop("warnings")})
    stamp = report.timestamp()
    doc = {"schema": report.SCHEMA, "meta": report.make_meta("games", params, stamp),
           "targets": {"edge": {"runs": runs, "median": report.medians(runs)}},
           "ratios": {}, "warnings": warnings}
    md = report.markdown(doc, ROWS + (CHAOS_ROWS if args.chaos != "none" else []))
    json_path, md_path = report.write(doc, args.out, md)
    print(md)
    print(f"report: {json_path}", file=sys.stderr)
    print(f"summary: {md_path}", file=sys.stderr)
    return 0


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def run_games(p: dict[str, Any], procs: int, quiet: bool = False) -> dict[str, Any]:
    """One run: start the cluster and the load, measure, stop; the run's figures."""
    import psutil

    from bench.scenarios.games_load import worker_main
    from edge_node.local.cluster import LocalCluster

    rooms, players, edges = p["rooms"], p["players"], p["edges"]
    cluster = LocalCluster(edges, edge_args=["--room-handler", ARENA], origin=False,
                           quic=False)
    cluster.start()
    ctx = multiprocessing.get_context("spawn")
    workers: list[Any] = []
    try:
        edge_procs = [psutil.Process(e.pid) for e in cluster.edges]
        ncpu = os.cpu_count() or 1
        if p["pin"]:
            for e in cluster.edges:
                pin_pid(e.pid, {0})
        tag = f"{int(time.time() * 1000) % 10**9}"
        chaos = p.get("chaos", "none")
        victim = cluster.edges[0]
        event_at = ctx.Value("d", 0.0)
        specs = [(r * players + j, f"arena-b{tag}-{r}", (r + j) % edges, j)
                 for r in range(rooms) for j in range(players)]
        ready, results = ctx.Queue(), ctx.Queue()
        total = p["warmup"] + p["duration"]
        for w in range(procs):
            mine = specs[w::procs]
            proc = ctx.Process(target=worker_main, args=(
                cluster.urls, cluster.secret, mine, p["input_hz"], total, ready, results,
                {w % (ncpu - 1) + 1} if p["pin"] and ncpu > 1 else None,
                (victim.edge_id, event_at) if chaos != "none" else None), daemon=True)
            proc.start()
            workers.append(proc)
        joined = 0
        deadline = time.monotonic() + 120 + len(specs) / 20
        for _ in workers:
            joined += int(ready.get(timeout=max(1.0, deadline - time.monotonic())))
        _say(quiet, f"{joined} players in {rooms} rooms on {edges} edge(s); warming up")
        loadgen = [psutil.Process(w.pid) for w in workers]
        time.sleep(p["warmup"])
        m0 = [scrape_metrics(e.http_url, timeout=5) for e in cluster.edges]
        c0 = [sample(x) for x in edge_procs]
        g0 = [sample(x) for x in loadgen]
        if chaos == "none":
            time.sleep(p["duration"])
        else:
            time.sleep(p["duration"] / 2)
            event_at.value = time.time()
            if chaos == "kill":
                victim.kill()
            else:
                victim.signal(signal.SIGTERM)
            _say(quiet, f"{chaos}: {victim.edge_id} at {p['duration'] / 2:g} s")
            time.sleep(p["duration"] / 2)
        live = [i for i, e in enumerate(cluster.edges) if e.alive()]
        m1 = [scrape_metrics(e.http_url, timeout=5) if e.alive() else m0[i]
              for i, e in enumerate(cluster.edges)]
        c1 = [sample(x) if i in live else c0[i] for i, x in enumerate(edge_procs)]
        g1 = [sample(x) for x in loadgen]
        outs = [results.get(timeout=60) for _ in workers]
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
        cluster.stop()
    out = _figures(p, joined, m0, m1, c0, c1, g0, g1, outs)
    if chaos != "none":
        out.update(_chaos_figures(p, outs, [m1[i] for i in live]))
    return out


def _chaos_figures(p: dict[str, Any], outs: list[dict[str, Any]],
                   scrapes: list[dict[str, float]]) -> dict[str, Any]:
    """The rooms the first edge owned (``r mod E == 0``), worst over their players."""
    rooms: dict[str, dict[str, float]] = {}
    for o in outs:
        for name, r in o.get("rooms", {}).items():
            if int(name.rsplit("-", 1)[1]) % p["edges"] != 0:
                continue
            mine = rooms.setdefault(name, dict.fromkeys(r, 0.0))
            for k, v in r.items():
                mine[k] = max(mine[k], v)
    again = sorted(r["again_s"] for r in rooms.values())
    return {
        "rooms_hit": len(rooms),
        "ticked_again_p50_s": round(statistics.median(again), 3) if again else None,
        "ticked_again_max_s": round(again[-1], 3) if again else None,
        "stay_gap_max_ms": round(1000 * max((r["stay_gap_s"] for r in rooms.values()),
                                            default=0.0), 1),
        "moved_gap_max_ms": round(1000 * max((r["moved_gap_s"] for r in rooms.values()),
                                             default=0.0), 1),
        "gap_before_max_ms": round(1000 * max((r["gap_before_s"] for r in rooms.values()),
                                              default=0.0), 1),
        "ticks_rerun_max": int(max((r["rerun"] for r in rooms.values()), default=0.0)),
        "inputs_lost": sum(o.get("lost", 0) for o in outs),
        "inputs_twice": sum(o.get("twice", 0) for o in outs),
        **continuity_figures(scrapes),
    }


def _figures(p: dict[str, Any], joined: int, m0: list[dict[str, float]],
             m1: list[dict[str, float]], c0: list[Any], c1: list[Any], g0: list[Any],
             g1: list[Any], outs: list[dict[str, Any]]) -> dict[str, Any]:
    dur = p["duration"]

    def delta(name: str) -> float:
        return sum(b.get(name, 0.0) - a.get(name, 0.0) for a, b in zip(m0, m1, strict=True))

    ticks = delta("edge_game_ticks_total")
    cpu = sum(b.cpu_s - a.cpu_s for a, b in zip(c0, c1, strict=True))
    pbytes = delta("edge_game_patch_bytes_total")
    fbytes = delta("edge_game_full_state_equivalent_bytes_total")
    loadgen = [100.0 * (b.cpu_s - a.cpu_s) / (b.t - a.t) for a, b in zip(g0, g1, strict=True)]
    inputs = sum(o["inputs"] for o in outs)
    acked = sum(o["acked"] for o in outs)
    warnings = [o["error"] for o in outs if o.get("error")]
    # Load generators may share cores (pinned: all on the CPUs but 0): judge their
    # total against the cores they had.
    cores = max(1, min(len(loadgen), (os.cpu_count() or 2) - 1 if p["pin"] else
                       (os.cpu_count() or 1)))
    if sum(loadgen) / cores > 85.0:
        warnings.append(f"the load generators used {sum(loadgen):.0f}% of {cores} core(s): "
                        "they may be the bottleneck (inputs sent below --input-hz; add CPUs "
                        "or lower --input-hz)")
    if joined < p["rooms"] * p["players"]:
        warnings.append(f"only {joined} of {p['rooms'] * p['players']} players joined")
    return {
        "players_joined": joined,
        "tick_jitter_p50_ms": bucket_quantile_ms(m0, m1, "edge_game_tick_lateness_seconds", 0.5),
        "tick_jitter_p99_ms": bucket_quantile_ms(m0, m1, "edge_game_tick_lateness_seconds", 0.99),
        "tick_time_p99_ms": bucket_quantile_ms(m0, m1, "edge_game_tick_seconds", 0.99),
        "ticks_per_s": round(ticks / dur, 1),
        "edge_cpu_us_per_room_tick": round(1e6 * cpu / ticks, 1) if ticks else None,
        "edge_cpu_percent": round(100.0 * cpu / dur, 1),
        "patch_bytes_per_player_s": round(pbytes / max(joined, 1) / dur, 1),
        "full_bytes_per_player_s": round(fbytes / max(joined, 1) / dur, 1),
        "bandwidth_saving": round(fbytes / pbytes, 2) if pbytes else None,
        "ticks_skipped": delta("edge_game_ticks_skipped_total"),
        "inputs_per_s": round(inputs / (p["warmup"] + dur), 1),
        "inputs_acked_percent": round(100.0 * acked / inputs, 2) if inputs else None,
        "resyncs": sum(o["resyncs"] for o in outs),
        "loadgen_cpu_percent": round(sum(loadgen), 1),
        "warnings": warnings,
    }

