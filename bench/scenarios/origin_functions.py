"""``origin-functions``: origin functions handled per second as origin workers are
added (1..``--workers-max``), each on the same backlog.

A run starts an embedded Redis; then, for W = 1..``--workers-max``, one phase:

1. ``FLUSHALL``; start W ``python -m origin worker`` processes, each with
   ``--functions bench.origin_handlers:functions`` (one handler, ``bench.work``, for
   ``room_event``: it spins ``--body-us`` µs of CPU, sleeps ``--sleep-ms``, then
   records its effect once per event id; :mod:`bench.origin_handlers`);
2. wait until every worker is a consumer of both groups (uplink ``origin``, hooks
   ``hooks``) on every shard, so that no worker starts ahead of the others;
3. write the backlog: ``--events`` ``room_event`` entries (packed beforehand, in
   edge-style batches of :data:`BATCH` entries per stream entry, spread over 256
   rooms and so over the ``--shards`` uplink streams) in one pipeline: the load
   generator is a few XADDs, never the bound;
4. the workers apply the entries (the atomic apply step queues each event on its
   shard's hooks stream) and run the handler; this process polls the handler's
   count (``obench:done``) until it reaches ``--events`` (drained) or
   ``--duration`` seconds have passed;
5. stop the workers (SIGTERM), then read the final counts.

Figures per phase: events handled in the window and per second (the window runs
from the backlog's first XADD to the drain, or the deadline), the workers' CPU
(``/proc``) in all and per event, that minus the body (``--body-us``): what the
worker spends per event on the apply step, the hooks runner and the handler's record
(one EVAL), Redis's CPU per event, the machine's, and the exactly-once checks:
``duplicates`` (effects recorded twice: must be 0), ``missing`` (events without an
effect after the workers stopped), ``dead_letters`` and the hooks stats' ``fn_ok``.
``ratio`` = events/s with W = ``--workers-max`` / with W = 1.

Each worker runs at most ``--concurrency`` handler attempts at once (the workers'
``--hooks-concurrency``, default 64): with a sleeping (I/O-bound) handler one worker
handles at most min(``--concurrency``, ``--max-inflight``) / ``--sleep-ms`` events per
second (``slot_bound_per_s``), and another worker adds as many slots whatever the
cores; with a CPU body the bound is the cores, which the workers share with Redis and
this process.  ``--max-inflight`` (the workers' ``--hooks-max-inflight``, default the
origin's 1000) bounds the events a worker holds, all shards together.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.errors import BenchError, BenchFailure
from bench.origin_handlers import (
    DONE_KEY,
    DUPS_KEY,
    KIND,
    MAX_BODY_US,
    MAX_SLEEP_MS,
)
from bench.procstats import (
    OTHER_CPU_WARN_PERCENT,
    ProcSample,
    cpu_between,
    sample,
    stop_process,
    system_cpu,
)
from bench.progress import Progress
from bench.validators import non_negative_float, positive_float, positive_int
from origin.hooks.runner import HookSettings

__all__ = ["register", "run_origin_functions", "phase_rows", "validate",
           "machine_notes", "backlog", "BATCH"]

FUNCTIONS_SPEC = "bench.origin_handlers:functions"
#: Events per uplink stream entry (an edge sends up to 500; 100 is a busy edge's).
BATCH = 100
#: Rooms the events are spread over (and through them, the shards).
ROOMS = 256
EDGE_ID = "obench-edge"
#: The hooks streams' cap (``HookSettings.maxlen``, per shard): a larger backlog
#: could be trimmed before it is handled.
MAX_EVENTS = 100_000
MAX_WORKERS = 16
#: Seconds for the workers to start and join the consumer groups.
START_TIMEOUT_S = 60.0
POLL_S = 0.02
WORKER_SATURATION_PERCENT = 90.0
MACHINE_SATURATION_PERCENT = 90.0

def phase_rows(workers_max: int) -> list[tuple[str, str]]:
    """Report rows for the phases 1..``workers_max`` workers and the ratio."""
    rows: list[tuple[str, str]] = []
    names = [(w, f"{w} worker{'s' if w > 1 else ''}") for w in range(1, workers_max + 1)]
    for label, fig in (("events/s", "per_s"),
                       ("workers' CPU µs per event", "cpu_us"),
                       ("CPU µs per event beyond the body", "overhead_us_per_event"),
                       ("workers' CPU (% of one core, summed)", "worker_cpu_percent"),
                       ("Redis CPU µs per event", "redis_cpu_us"),
                       ("machine busy (% of all cores)", "host_busy_percent"),
                       ("other processes' CPU (% of one core)", "other_cpu_percent"),
                       ("events handled in the window", "handled"),
                       ("duplicates (effects recorded twice)", "duplicates"),
                       ("missing (events without an effect)", "missing"),
                       ("dead letters", "dead_letters")):
        rows += [(f"{label}, {name}", f"workers_{w}.{fig}") for w, name in names]
    if workers_max > 1:
        rows.append((f"events/s ratio, {workers_max} workers / 1", "ratio"))
    rows.append(("events per worker CPU-second (1 worker)", "events_per_worker_cpu_s"))
    return rows


def register(subs: Any) -> None:
    """Add the ``origin-functions`` sub-command to ``subs`` (an argparse subparsers
    action)."""
    sp = subs.add_parser(
        "origin-functions", help="origin functions: events handled/s as origin workers "
        "are added (1..W), exactly once", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--workers-max", type=positive_int, default=2,
                    help=f"phases with 1..W origin workers, at most {MAX_WORKERS} "
                    "(default: 2)")
    sp.add_argument("--events", type=positive_int, default=20_000,
                    help=f"backlog of each phase, at most {MAX_EVENTS:,} (default: 20000)")
    sp.add_argument("--body-us", type=int, default=0,
                    help=f"µs of CPU the handler spins per event, 0..{MAX_BODY_US} "
                    "(default: 0)")
    sp.add_argument("--sleep-ms", type=non_negative_float, default=20.0,
                    help=f"ms the handler awaits asyncio.sleep per event (I/O-like), at "
                    f"most {MAX_SLEEP_MS:g} (default: 20)")
    sp.add_argument("--duration", type=positive_float, default=60.0,
                    help="longest measured seconds per phase: a backlog not drained by "
                    "then is measured up to there (default: 60)")
    sp.add_argument("--max-inflight", type=positive_int, default=HookSettings().max_inflight,
                    help="the workers' --hooks-max-inflight: events one worker holds "
                    "(default: %(default)s)")
    sp.add_argument("--concurrency", type=positive_int, default=HookSettings().concurrency,
                    help="the workers' --hooks-concurrency: handler attempts one worker "
                    "runs at once (default: %(default)s)")
    sp.add_argument("--shards", type=positive_int, default=4,
                    help="uplink streams (the origin's --shards) (default: 4)")
    sp.add_argument("--runs", type=positive_int, default=1,
                    help="runs (a fresh Redis each); the report shows medians (default: 1)")
    sp.add_argument("--out", type=Path, default=Path("bench-results"),
                    help="report directory (default: bench-results)")
    sp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sp.set_defaults(func=cmd)


def validate(p: dict[str, Any]) -> None:
    """Raise :class:`BenchError` for parameters the handler would dead-letter or that
    the origin could not hold (a backlog over the hooks streams' cap is trimmed)."""
    if p["events"] > MAX_EVENTS:
        raise BenchError(f"--events must be at most {MAX_EVENTS:,} (the hooks streams' "
                         "cap: more could be trimmed before it is handled)")
    if not 0 <= p["body_us"] <= MAX_BODY_US:
        raise BenchError(f"--body-us must be between 0 and {MAX_BODY_US}")
    if p["sleep_ms"] > MAX_SLEEP_MS:
        raise BenchError(f"--sleep-ms must be at most {MAX_SLEEP_MS:g}")
    if p["workers_max"] > MAX_WORKERS:
        raise BenchError(f"--workers-max must be at most {MAX_WORKERS}")
    if p["shards"] > 64:
        raise BenchError("--shards must be at most 64")


def cmd(args: argparse.Namespace) -> int:
    """The ``origin-functions`` sub-command: run, write the report, print the summary."""
    params = {"workers_max": args.workers_max, "events": args.events,
              "body_us": args.body_us, "sleep_ms": args.sleep_ms,
              "duration": args.duration, "shards": args.shards,
              "max_inflight": args.max_inflight, "concurrency": args.concurrency}
    validate(params)
    notes = machine_notes(params, os.cpu_count() or 1)
    for n in notes:
        _say(args.quiet, f"note: {n}")
    runs = [run_origin_functions(params, args.quiet, i, args.runs) for i in range(args.runs)]
    warnings = sorted({w for r in runs for w in r.pop("warnings")} | set(notes))
    stamp = report.timestamp()
    doc = {"schema": report.SCHEMA,
           "meta": report.make_meta("origin-functions", params, stamp),
           "targets": {"origin": {"runs": runs, "median": report.medians(runs)}},
           "ratios": {}, "warnings": warnings}
    md = report.markdown(doc, phase_rows(args.workers_max))
    json_path, md_path = report.write(doc, args.out, md)
    print(md)
    print(f"report: {json_path}", file=sys.stderr)
    print(f"summary: {md_path}", file=sys.stderr)
    return 0


def machine_notes(p: dict[str, Any], ncpu: int) -> list[str]:
    """What this machine (``ncpu`` CPUs) cannot show, said up front (also kept in the
    report's warnings)."""
    notes: list[str] = []
    if p["body_us"] and ncpu < p["workers_max"] + 1:
        notes.append(f"this machine has {ncpu} CPUs, fewer than {p['workers_max']} workers "
                     "+ Redis: with a CPU body (--body-us) events/s is bound by the cores "
                     "the workers share with Redis, not by the workers (see "
                     "events_per_worker_cpu_s and the workers' CPU)")
    if not p["sleep_ms"] and not p["body_us"]:
        notes.append("no body (--sleep-ms 0, --body-us 0): the events cost only the "
                     "machinery, which is CPU: bound by the cores, as a CPU body is")
    return notes


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def backlog(events: int, shards: int, body: dict[str, Any], edge: str = EDGE_ID,
            ts_ms: int | None = None) -> list[tuple[str, dict[str, bytes]]]:
    """The uplink stream entries of a backlog: ``(stream key, batch fields)``, events
    ``edge:1..edge:events`` of kind ``room_event`` on rooms ``room-<i mod 256>``,
    each batch of one shard and at most :data:`BATCH` entries, in seq order."""
    from edge_node.uplink.wire import pack_batch, pack_entry, shard_of, stream_key

    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    by_shard: dict[int, list[bytes]] = {}
    for seq in range(1, events + 1):
        key = f"room-{seq % ROOMS}"
        by_shard.setdefault(shard_of(key, shards), []).append(
            pack_entry(seq, KIND, key, ts, body))
    out: list[tuple[str, dict[str, bytes]]] = []
    for shard, packed in sorted(by_shard.items()):
        out += [(stream_key(shard), pack_batch(edge, packed[i:i + BATCH]))
                for i in range(0, len(packed), BATCH)]
    return out


def run_origin_functions(p: dict[str, Any], quiet: bool = False, run: int = 0,
                         runs: int = 1) -> dict[str, Any]:
    """One run on a fresh Redis: a phase per worker count 1..``workers_max``; the run's
    figures (``workers_<w>.*``, ``ratio``, ``events_per_worker_cpu_s``) and
    ``warnings``.  Every process it starts is stopped when it returns or raises."""
    import psutil
    import redis

    from edge_node.local.redis_server import RedisUnavailable, start_redis

    try:
        server = start_redis()
    except RedisUnavailable as exc:
        raise BenchFailure(f"could not start Redis: {exc}") from exc
    logs = tempfile.mkdtemp(prefix="obench-")
    r = redis.Redis.from_url(server.url, socket_timeout=10.0)
    progress = Progress(not quiet)
    out: dict[str, Any] = {}
    warnings: list[str] = []
    try:
        redis_proc = psutil.Process(server.pid)
        entries = backlog(p["events"], p["shards"],
                          {"us": p["body_us"], "sleep_ms": p["sleep_ms"]})
        for w in range(1, p["workers_max"] + 1):
            progress.label = f"run {run + 1}/{runs}, {w} worker{'s' if w > 1 else ''}:"
            fig = _phase(r, server.url, w, entries, p, redis_proc, Path(logs), progress)
            warnings.extend(f"{w} worker{'s' if w > 1 else ''}: {x}"
                            for x in fig.pop("warnings"))
            out[f"workers_{w}"] = fig
        progress.done()
    except psutil.Error as exc:
        raise BenchFailure(f"Redis died during the run: {exc}") from exc
    finally:
        r.close()
        server.stop()
        shutil.rmtree(logs, ignore_errors=True)  # a failure's message quotes its log
    one = out["workers_1"]
    if p["workers_max"] > 1:
        out["ratio"] = report.ratio(out[f"workers_{p['workers_max']}"]["per_s"],
                                    one["per_s"])
    out["events_per_worker_cpu_s"] = (round(1e6 / one["cpu_us"]) if one["cpu_us"]
                                      else None)
    out["warnings"] = warnings
    return out


def _start_workers(url: str, n: int, p: dict[str, Any], logs: Path
                   ) -> list[subprocess.Popen[bytes]]:
    """``n`` worker processes (consumers ``obench-0..n-1``), output to ``logs``.  They
    watch this process (``ORIGIN_RUN_PID``): if it dies they stop by themselves."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORIGIN_FUNCTIONS", "ORIGIN_WEBHOOKS")}
    env.update({"ORIGIN_RUN_PID": str(os.getpid()), "ORIGIN_LOG_LEVEL": "WARNING"})
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(n):
        with (logs / f"worker-{n}-{i}.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "origin", "worker", "--redis-url", url,
                 "--shards", str(p["shards"]), "--consumer", f"obench-{i}",
                 "--functions", FUNCTIONS_SPEC,
                 "--hooks-max-inflight", str(p["max_inflight"]),
                 "--hooks-concurrency", str(p["concurrency"])],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _tail(logs: Path, n: int, i: int) -> str:
    try:
        text = (logs / f"worker-{n}-{i}.log").read_text(errors="replace")
    except OSError:
        return ""
    return text.strip()[-500:]


def _check_alive(procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    for i, pr in enumerate(procs):
        if pr.poll() is not None:
            raise BenchFailure(f"origin worker {i} exited ({pr.returncode}): "
                               f"{_tail(logs, len(procs), i) or 'no output'}")


def _ready(r: Any, n: int, shards: int) -> bool:
    """Every worker is a consumer of the uplink and the hooks group on every shard."""
    import redis

    from origin.hooks.record import HOOKS_GROUP, hooks_stream
    from origin.keys import GROUP, ShardKeys

    want = {f"obench-{i}".encode() for i in range(n)}
    for shard in range(shards):
        for stream, group in ((ShardKeys(shard).stream, GROUP),
                              (hooks_stream(shard), HOOKS_GROUP)):
            try:
                consumers = r.xinfo_consumers(stream, group)
            except redis.ResponseError:  # no such stream or group yet
                return False
            names = {c["name"] if isinstance(c["name"], bytes) else c["name"].encode()
                     for c in consumers}
            if not want <= names:
                return False
    return True


def _phase(r: Any, url: str, n: int, entries: list[tuple[str, dict[str, bytes]]],
           p: dict[str, Any], redis_proc: Any, logs: Path, progress: Progress
           ) -> dict[str, Any]:
    """One phase with ``n`` workers on a fresh backlog; its figures (see
    :func:`_figures`).  The workers are stopped before it returns or raises."""
    import psutil

    r.flushall()
    procs = _start_workers(url, n, p, logs)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(r, n, p["shards"]):
            _check_alive(procs, logs)
            if time.monotonic() > deadline:
                raise BenchFailure(f"{n} origin worker(s) did not join the consumer "
                                   f"groups within {START_TIMEOUT_S:.0f} s")
            progress.update("starting workers…")
            time.sleep(0.05)
        workers = [psutil.Process(pr.pid) for pr in procs]
        w0, rs0 = [sample(x) for x in workers], sample(redis_proc)
        h0, self0, t0 = system_cpu(), time.process_time(), time.monotonic()
        pipe = r.pipeline(transaction=False)
        for stream, fields in entries:
            pipe.xadd(stream, fields)
        pipe.execute()
        fill_s = time.monotonic() - t0
        end = t0 + p["duration"]
        done = 0
        while done < p["events"] and time.monotonic() < end:
            time.sleep(POLL_S)
            done = int(r.get(DONE_KEY) or 0)
            _check_alive(procs, logs)
            progress.update(f"handled {done:,}/{p['events']:,}")
        w1, rs1 = [sample(x) for x in workers], sample(redis_proc)
        h1, self1, t1 = system_cpu(), time.process_time(), time.monotonic()
    except psutil.Error as exc:
        raise BenchFailure(f"an origin worker died during the phase: {exc}") from exc
    finally:
        for pr in procs:
            stop_process(pr, timeout=10.0)
    ours = (self1 - self0 + rs1.cpu_s - rs0.cpu_s
            + sum(b.cpu_s - a.cpu_s for a, b in zip(w0, w1, strict=True)))
    wall = max(t1 - t0, 1e-9)
    host = {"busy_cores": sum(h1[k] - h0[k] for k in h0) / wall,
            "other_cores": max(0.0, h1["task"] - h0["task"] - ours) / wall}
    return _figures(n, p, done, wall, fill_s, (w0, w1), (rs0, rs1), host, _final(r, p))


def _final(r: Any, p: dict[str, Any]) -> dict[str, int]:
    """Counts after the workers stopped: effects, duplicates, dead letters, the hooks
    stats' ``fn:ok``, and entries still on the hooks streams."""
    from origin.hooks.record import STATS_KEY, dead_stream, hooks_stream

    stats = r.hgetall(STATS_KEY)
    ok = stats.get(f"fn:ok:{KIND}".encode(), b"0")
    return {"done": int(r.get(DONE_KEY) or 0), "dups": int(r.get(DUPS_KEY) or 0),
            "dead": sum(int(r.xlen(dead_stream(i))) for i in range(p["shards"])),
            "fn_ok": int(float(ok)),
            "queued": sum(int(r.xlen(hooks_stream(i))) for i in range(p["shards"]))}


def _figures(n: int, p: dict[str, Any], handled: int, wall: float, fill_s: float,
             workers: tuple[list[ProcSample], list[ProcSample]],
             redis_cpu: tuple[ProcSample, ProcSample], host: dict[str, float],
             final: dict[str, int]) -> dict[str, Any]:
    """One phase's figures: ``handled`` (effects recorded in the window, which runs
    ``wall`` s from the backlog's first XADD), ``per_s``, the workers' CPU per event
    (``cpu_us``) and beyond the body, Redis's, the machine's (``host``: all
    processes' and interrupts' cores, and processes not of this run), the final
    counts (``final``: see :func:`_final`), and warnings."""
    cpu = [cpu_between(a, b) for a, b in zip(*workers, strict=True)]
    cpu_s = sum(c for c, _pct in cpu)
    redis_s, redis_pct = cpu_between(*redis_cpu)
    ncpu = os.cpu_count() or 1
    cpu_us = round(1e6 * cpu_s / handled, 2) if handled else None
    out: dict[str, Any] = {
        "workers": n,
        "events": p["events"],
        "handled": handled,
        "drained": handled >= p["events"],
        "window_s": round(wall, 3),
        "fill_s": round(fill_s, 4),
        "per_s": round(handled / wall, 1),
        "cpu_us": cpu_us,
        "body_us": p["body_us"],
        "overhead_us_per_event": (round(cpu_us - p["body_us"], 2) if cpu_us is not None
                                  else None),
        "worker_cpu_percent": round(sum(pct for _c, pct in cpu), 1),
        "worker_cpu_percent_per_worker": [round(pct, 1) for _c, pct in cpu],
        "redis_cpu_percent": round(redis_pct, 1),
        "redis_cpu_us": round(1e6 * redis_s / handled, 2) if handled else None,
        "host_busy_percent": round(100.0 * host["busy_cores"] / ncpu, 1),
        "other_cpu_percent": round(100.0 * host["other_cores"], 1),
        "slot_bound_per_s": (round(n * min(p["concurrency"], p["max_inflight"])
                                   * 1000.0 / p["sleep_ms"], 1)
                             if p["sleep_ms"] else None),
        "effects": final["done"],
        "duplicates": final["dups"],
        "missing": max(0, p["events"] - final["done"]),
        "dead_letters": final["dead"],
        "fn_ok": final["fn_ok"],
        "left_queued": final["queued"],
    }
    warns: list[str] = []
    if not out["drained"]:
        warns.append(f"the backlog was not drained within --duration {p['duration']:g} s "
                     f"({handled:,} of {p['events']:,}): events/s is over that part")
    if final["dups"]:
        warns.append(f"{final['dups']} effects were recorded twice (duplicates)")
    if out["missing"] and out["drained"]:
        warns.append(f"{out['missing']} events had no effect after the workers stopped")
    if final["dead"]:
        warns.append(f"{final['dead']} dead letters")
    busiest = max((pct for _c, pct in cpu), default=0.0)
    if busiest > WORKER_SATURATION_PERCENT:
        warns.append(f"a worker used {busiest:.0f}% of a core: CPU-bound")
    if out["host_busy_percent"] > MACHINE_SATURATION_PERCENT:
        warns.append(f"the machine was {out['host_busy_percent']:.0f}% busy (all its "
                     f"{ncpu} cores): events/s is what it allows")
    if out["other_cpu_percent"] > OTHER_CPU_WARN_PERCENT:
        warns.append(f"processes outside the benchmark used {out['other_cpu_percent']:.0f}% "
                     "of a core during the window: the host was not quiet, figures are noisy")
    out["warnings"] = warns
    return out
