"""``failover``: what clients see when an edge is killed, frozen or drained under load.

A local cluster (embedded Redis and ``--edges`` edges) is started; ``--clients`` SDK
clients connect to the *victim* edge (edge 1, with the others as fallbacks) and join
``--rooms`` rooms; ``--publishers`` clients on the other edges publish reliable
messages at ``--rate`` per second in total on an open-loop schedule.  At ``--at``
seconds the victim is SIGKILLed (``--action kill``), SIGSTOPped (``stop``) or
SIGTERMed (``drain``: live handover).  Reported per run, then as medians:

- ``resume_s``: time from the action to each client being served again (resumed
  after a reconnect, or moved by a handoff): p50, p99, max (= time to all resumed);
- ``gap_ms``: the longest silence each client saw around the action: p50, p99, max;
- ``lost`` / ``duplicates``: reliable messages missing or repeated at the application
  level, per client, summed;
- ``recovered_false``, ``reconnects``, ``handoffs``, ``connects_rejected``;
- ``connections_per_surviving_edge`` and the busiest one's share: how evenly the
  clients spread over the neighbours.

Every run stops by itself: publishing lasts ``--duration`` seconds, then at most
``--settle`` seconds for the last messages.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import json
import os
import signal
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procstats import metric_total
from edge_node.runtime.gc_tuning import freeze_heap

__all__ = ["FailoverParams", "run_failover_cli"]

_P = struct.Struct("!IIq")  # publisher, seq, intended send (ns)


@dataclass
class FailoverParams:
    """Parameters of one failover scenario (see the module docstring)."""

    action: str = "kill"
    clients: int = 200
    rooms: int = 20
    publishers: int = 4
    rate: float = 200.0
    edges: int = 3
    at: float = 3.0
    duration: float = 8.0
    settle: float = 10.0
    connect_rate: float = 2000.0


@dataclass
class _Client:
    idx: int
    room: str
    client: Any
    seen: dict[tuple[int, int], int] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    served_again: float | None = None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def _recorder(acked: dict[tuple[int, int], str], key: tuple[int, int],
              room: str) -> Any:
    def done(f: asyncio.Future[Any]) -> None:
        if not f.cancelled() and f.exception() is None:
            acked[key] = room
    return done


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e12 else f"{v:.3g}"
    return str(v)


async def _one_run(p: FailoverParams, progress: bool) -> dict[str, Any]:
    from client_sdk import connect
    from client_sdk.protocol import mint_token
    from edge_node.local.cluster import LocalCluster

    edge_args = ["--connect-rate", str(p.connect_rate)]
    cluster = LocalCluster(p.edges, edge_args=edge_args, origin=False)
    await asyncio.to_thread(cluster.start)
    clients: list[_Client] = []
    pubs: list[Any] = []
    try:
        victim, others = cluster.edges[0], cluster.edges[1:]
        now = time.time()

        def tok(name: str, kind: str = "player") -> str:
            return mint_token(cluster.secret, name, kind, ["*"], now=now, ttl=3600)

        sem = asyncio.Semaphore(100)

        async def make(i: int) -> _Client:
            async with sem:
                c = await connect([victim.url, *[e.url for e in others]], tok(f"c{i}"),
                                  ping_interval=1.0, ping_timeout=1.0, backoff_base=0.2,
                                  backoff_cap=2.0, rtt_probe_interval=None)
            rc = _Client(i, f"fo-{i % p.rooms}", c)

            def on_msg(m: Any, rc: _Client = rc) -> None:
                pub, seq, _t = _P.unpack_from(m.payload)
                rc.seen[(pub, seq)] = rc.seen.get((pub, seq), 0) + 1
                rc.arrivals.append(time.perf_counter())

            await c.join(rc.room, on_message=on_msg)
            return rc

        clients = list(await asyncio.gather(*(make(i) for i in range(p.clients))))
        for j in range(p.publishers):
            e = others[j % len(others)]
            pc = await connect([e.url], tok(f"pub{j}", "service"), rtt_probe_interval=None)
            for r in range(p.rooms):
                await pc.join(f"fo-{r}", echo=False)
            pubs.append(pc)
        acked: dict[tuple[int, int], str] = {}
        t_action: list[float] = []

        by_client = {id(rc.client): rc for rc in clients}

        def moved(c: Any) -> None:
            rc = by_client.get(id(c))  # not a scan of every client per reconnect
            if rc is not None and rc.served_again is None and t_action:
                rc.served_again = time.perf_counter()

        for rc in clients:
            rc.client.on_reconnect = moved
            rc.client.on_handoff = moved

        async def act() -> None:
            await asyncio.sleep(p.at)
            t_action.append(time.perf_counter())
            sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP,
                   "drain": signal.SIGTERM}[p.action]
            victim.signal(sig)
            if progress:
                print(f"  [{p.at:.1f}s] {p.action} {victim.edge_id}", file=sys.stderr)

        # The set-up objects (clients, connections) leave the collector's reach: a full
        # collection of this process then takes a few ms, not tens, and does not show
        # up as a silence of every client (measured: docs/drain.md).
        freeze_heap()
        action = asyncio.create_task(act())
        interval = 1.0 / p.rate
        start = time.perf_counter()
        futs = []
        k = 0
        while True:
            due = start + k * interval
            if due - start >= p.duration:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            j = k % len(pubs)
            room = f"fo-{k % p.rooms}"
            seq = k + 1
            fut = pubs[j].publish_nowait(room, _P.pack(j, seq, int(due * 1e9)))
            if fut is not None:
                fut.add_done_callback(_recorder(acked, (j, seq), room))
                futs.append(fut)
            k += 1
        await action
        deadline = time.perf_counter() + p.settle
        while time.perf_counter() < deadline:
            if all(f.done() for f in futs) and all(rc.served_again is not None
                                                   for rc in clients):
                await asyncio.sleep(0.5)
                break
            await asyncio.sleep(0.1)
        if p.action == "stop":
            victim.signal(signal.SIGCONT)  # let it exit cleanly at the end
        t0 = t_action[0]
        t_end = start + p.duration
        by_room: dict[str, list[tuple[int, int]]] = {}
        for key, room in acked.items():
            by_room.setdefault(room, []).append(key)
        lost = dups = 0
        for rc in clients:
            for key in by_room.get(rc.room, []):
                n = rc.seen.get(key, 0)
                lost += n == 0
                dups += max(0, n - 1)
        resume = [rc.served_again - t0 for rc in clients if rc.served_again is not None]
        gaps = []
        for rc in clients:
            # Silence from half a second before the action to the end of publishing,
            # counting the stretch before the first and after the last arrival.
            w0, w1 = t0 - 0.5, max(t_end, rc.served_again or t_end)
            window = [t for t in rc.arrivals if w0 <= t <= w1]
            edges_ = [w0, *window, min(w1, t_end) if window else w1]
            gaps.append(max(b - a for a, b in itertools.pairwise(edges_)))
        rejected = sum(metric_total(e.http_url, "edge_connects_rejected_total") for e in others)
        # Where the clients went (the publishers' connections included).
        per_edge = {e.edge_id: int(metric_total(e.http_url, "edge_connections")) for e in others}
        result = {
            "clients": p.clients,
            "served_again": len(resume),
            "resume_s": {"p50": _pct(resume, 50), "p99": _pct(resume, 99),
                         "max": max(resume) if resume else None},
            "gap_ms": {"p50": (_pct(gaps, 50) or 0) * 1000, "p99": (_pct(gaps, 99) or 0) * 1000,
                       "max": max(gaps) * 1000 if gaps else None},
            "published_acked": len(acked),
            "lost": lost,
            "duplicates": dups,
            "recovered_false": sum(1 for rc in clients for ev in rc.client.recoveries
                                   if not ev.recovered),
            "recovered_false_reasons": dict(collections.Counter(
                ev.reason for rc in clients for ev in rc.client.recoveries
                if not ev.recovered)),
            "reconnects": sum(rc.client.reconnects for rc in clients),
            "handoffs": sum(rc.client.handoffs for rc in clients),
            "connects_rejected": rejected,
            "connections_per_surviving_edge": per_edge,
            "busiest_survivor_share_pct": round(
                100.0 * max(per_edge.values()) / max(1, sum(per_edge.values())), 1),
        }
        return result
    finally:
        gc.unfreeze()
        # Close every client whatever happened, so no reconnect loop outlives the run.
        await asyncio.gather(*(c.close() for c in [*(rc.client for rc in clients), *pubs]),
                             return_exceptions=True)
        await asyncio.to_thread(cluster.stop)


def _median(runs: list[dict[str, Any]], path: tuple[str, ...]) -> float | None:
    vals = []
    for r in runs:
        v: Any = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(float(v))
    return statistics.median(vals) if vals else None


def run_failover_cli(p: FailoverParams, runs: int, out: Path, quiet: bool) -> int:
    """Run ``runs`` times, print a Markdown table, write JSON + Markdown to ``out``."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    results = []
    for i in range(runs):
        if not quiet:
            print(f"failover run {i + 1}/{runs}: {p.action}, {p.clients} clients ...",
                  file=sys.stderr)
        try:
            results.append(runner(_one_run(p, not quiet)))
        except Exception as exc:  # a run that could not complete: say why, no traceback
            print(f"failover run {i + 1} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    figures = [
        ("clients served again", ("served_again",)),
        ("time to served again p50 (s)", ("resume_s", "p50")),
        ("time to served again p99 (s)", ("resume_s", "p99")),
        ("time to all served again (s)", ("resume_s", "max")),
        ("gap per client p50 (ms)", ("gap_ms", "p50")),
        ("gap per client p99 (ms)", ("gap_ms", "p99")),
        ("gap per client max (ms)", ("gap_ms", "max")),
        ("reliable messages acked", ("published_acked",)),
        ("lost", ("lost",)),
        ("duplicates", ("duplicates",)),
        ("recovered=false", ("recovered_false",)),
        ("reconnects", ("reconnects",)),
        ("handoffs", ("handoffs",)),
        ("connects rejected (rate limit)", ("connects_rejected",)),
        ("busiest surviving edge's share of connections (%)",
         ("busiest_survivor_share_pct",)),
    ]
    medians = {label: _median(results, path) for label, path in figures}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    lines = [f"# bench failover ({p.action}) — {stamp}", "",
             ", ".join(f"{k}={v}" for k, v in vars(p).items()) + f", runs={runs}", "",
             "| figure | median | " + " | ".join(f"run {i + 1}" for i in range(runs)) + " |",
             "|---|---:|" + "---:|" * runs]
    for label, path in figures:
        cells = []
        for r in results:
            v: Any = r
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            cells.append(_fmt(v))
        lines.append(f"| {label} | {_fmt(medians[label])} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"failover-{p.action}-{stamp}"
    doc = {"meta": {"scenario": "failover", "params": vars(p), "runs": runs,
                    "timestamp": stamp, "cpu_count": os.cpu_count()},
           "runs": results, "medians": medians}
    base.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    base.with_suffix(".md").write_text(md)
    print(f"report: {base.with_suffix('.json')}", file=sys.stderr)
    ok = all(r["lost"] == 0 and r["duplicates"] == 0 and r["served_again"] == r["clients"]
             for r in results)
    return 0 if ok else 1
