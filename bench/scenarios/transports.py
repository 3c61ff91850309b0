"""The ``transports`` scenario: WebSocket vs QUIC stream vs QUIC datagram, same run.

One edge (no Redis: the transport cost alone, as ``edge-local``) listens on
both transports.  For each run and each mode, a fresh load process measures:

* **RTT**: one client publishes and waits for its own echo, ``--rtt-samples``
  times in a row (reliable publish on ``ws`` and ``quic_stream``, unreliable =
  datagram both ways on ``quic_datagram``); p50/p99 in µs.
* **saturation**: one publisher sends ``--messages`` as fast as the transport
  takes them (reliable with at most ``--window`` unconfirmed; datagrams
  unreliable) into a room of ``--subscribers``; deliveries/s = deliveries
  received / (last receive - first send), plus the edge's CPU per delivery and
  the fraction of datagram deliveries that arrived.
* **handshakes** (``ws`` and ``quic`` only): ``--handshakes`` sequential
  connect + HELLO/WELCOME + close; edge CPU per handshake (QUIC includes its
  TLS 1.3 handshake; the WebSocket here is plain, without TLS).

Each figure is the median over ``--runs`` runs (modes interleaved per run).
Client and edge share this machine: the load process's CPU is reported so a
client-bound figure can be recognised.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.errors import BenchError, BenchFailure

__all__ = ["MODES", "TransportsParams", "run_transports_cli"]

MODES = ("ws", "quic_stream", "quic_datagram")
_SECRET = b"bench-transports-secret"


@dataclass(frozen=True)
class TransportsParams:
    """What to measure (see the module docstring)."""

    rtt_samples: int = 2000
    subscribers: int = 20
    messages: int = 5000
    window: int = 500
    payload_size: int = 64
    handshakes: int = 100
    runs: int = 3


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


# -- load process ---------------------------------------------------------------------


async def _rtt(url: str, tok: str, mode: str, p: TransportsParams) -> dict[str, Any]:
    from client_sdk import connect

    c = await connect(url, tok, ping_interval=None, rtt_probe_interval=None)
    loop = asyncio.get_running_loop()
    waiting: dict[bytes, asyncio.Future[float]] = {}

    def on_message(m: Any) -> None:
        fut = waiting.pop(m.payload[:8], None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())

    await c.join("rtt", on_message=on_message)
    reliable = mode != "quic_datagram"
    samples: list[float] = []
    lost = 0
    pad = b"x" * max(0, p.payload_size - 8)
    for i in range(p.rtt_samples + 50):  # the first 50 warm up
        key = i.to_bytes(8, "big")
        fut = loop.create_future()
        waiting[key] = fut
        t0 = time.perf_counter()
        if reliable:
            c.publish_nowait("rtt", key + pad)
        else:
            await c.publish("rtt", key + pad, reliable=False)
        try:
            async with asyncio.timeout(1.0):
                t1 = await fut
        except TimeoutError:
            waiting.pop(key, None)
            lost += 1
            continue
        if i >= 50:
            samples.append((t1 - t0) * 1e6)
    await c.close()
    return {"p50_us": _percentile(samples, 0.5), "p99_us": _percentile(samples, 0.99),
            "samples": len(samples), "lost": lost}


async def _saturation(url: str, tok: str, mode: str, p: TransportsParams) -> dict[str, Any]:
    from client_sdk import connect

    received = [0]
    last = [0.0]

    def on_message(m: Any) -> None:
        received[0] += 1
        last[0] = time.perf_counter()

    subs = [await connect(url, tok, ping_interval=None, rtt_probe_interval=None)
            for _ in range(p.subscribers)]
    for s in subs:
        await s.join("sat", on_message=on_message)
    pub = await connect(url, tok, ping_interval=None, rtt_probe_interval=None)
    await pub.join("sat", echo=False)
    payload = b"y" * p.payload_size
    t0 = time.perf_counter()
    if mode == "quic_datagram":
        for i in range(p.messages):
            await pub.publish("sat", payload, reliable=False)
            if i % 32 == 31:
                await asyncio.sleep(0)  # let the loop flush and read
    else:
        pending: list[asyncio.Future[Any]] = []
        for _ in range(p.messages):
            fut = pub.publish_nowait("sat", payload)
            assert fut is not None
            pending.append(fut)
            if len(pending) >= p.window:
                await pending[0]
                pending = [f for f in pending if not f.done()]
        await asyncio.gather(*pending)
    expected = p.messages * p.subscribers
    deadline = time.perf_counter() + 20.0
    quiet_since = time.perf_counter()
    seen = received[0]
    while received[0] < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        if received[0] != seen:
            seen, quiet_since = received[0], time.perf_counter()
        elif time.perf_counter() - quiet_since > 1.0:
            break  # datagrams that were dropped will not come
    elapsed = max(1e-9, last[0] - t0)
    for c in [pub, *subs]:
        await c.close()
    return {"deliveries": received[0], "expected": expected,
            "deliveries_per_s": received[0] / elapsed, "delivered_fraction": received[0] / expected}


async def _handshakes(url: str, tok: str, p: TransportsParams) -> dict[str, Any]:
    from client_sdk import connect

    t0 = time.perf_counter()
    for _ in range(p.handshakes):
        c = await connect(url, tok, ping_interval=None, reconnect=False, rtt_probe_interval=None)
        await c.close()
    return {"handshakes": p.handshakes,
            "client_ms_each": (time.perf_counter() - t0) * 1000 / p.handshakes}


def _load_main(phase: str, url: str, tok: str, mode: str, p: TransportsParams,
               out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    t_cpu = time.process_time()
    if phase == "rtt":
        res = asyncio.run(_rtt(url, tok, mode, p))
    elif phase == "saturation":
        res = asyncio.run(_saturation(url, tok, mode, p))
    else:
        res = asyncio.run(_handshakes(url, tok, p))
    res["loadgen_cpu_s"] = time.process_time() - t_cpu
    out.send(res)


# -- parent ---------------------------------------------------------------------------


def _phase(edge_proc: psutil.Process, phase: str, url: str, tok: str, mode: str,
           p: TransportsParams) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    recv_end, send_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load_main, args=(phase, url, tok, mode, p, send_end))
    proc.start()
    # The edge's CPU from the moment the load process is up (it idles meanwhile).
    c0 = edge_proc.cpu_times()
    if not recv_end.poll(300):
        proc.kill()
        raise BenchFailure(f"{phase}/{mode}: the load process gave no result in 300 s")
    res: dict[str, Any] = recv_end.recv()
    c1 = edge_proc.cpu_times()
    proc.join(10)
    res["edge_cpu_s"] = (c1.user + c1.system) - (c0.user + c0.system)
    return res


def measure(p: TransportsParams, quiet: bool = False) -> dict[str, Any]:
    """Run every mode ``p.runs`` times against one fresh edge; return the report."""
    from client_sdk.protocol import mint_token
    from edge_node.local.launch import spawn_edge
    from edge_node.transports.quic.tls import write_self_signed

    with tempfile.TemporaryDirectory(prefix="bench-transports-") as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        write_self_signed(cert, key)
        os.environ["EDGE_RELAY_CA_FILE"] = cert  # inherited by the load processes
        edge = spawn_edge(secret=_SECRET, edge_id="bench-transports", quic=True,
                          quic_cert=cert, quic_key=key, log_path=os.path.join(tmp, "edge.log"),
                          extra_args=["--rate", "1000000", "--burst", "1000000",
                                      "--send-queue-bytes", str(64 * 1024 * 1024)])
        try:
            edge_proc = psutil.Process(edge.pid)
            tok = mint_token(_SECRET, "bench", "service", ["*"], now=time.time(), ttl=3600)
            urls = {"ws": edge.ws_url, "quic_stream": edge.quic_url,
                    "quic_datagram": edge.quic_url}
            raw: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for run in range(p.runs):
                for mode in MODES:
                    if not quiet:
                        print(f"run {run + 1}/{p.runs}: {mode}", file=sys.stderr)
                    r = {"rtt": _phase(edge_proc, "rtt", urls[mode], tok, mode, p)}
                    sat = _phase(edge_proc, "saturation", urls[mode], tok, mode, p)
                    sat["edge_cpu_us_per_delivery"] = (
                        sat["edge_cpu_s"] * 1e6 / max(1, sat["deliveries"]))
                    r["saturation"] = sat
                    if mode != "quic_datagram":
                        hs = _phase(edge_proc, "handshakes", urls[mode], tok, mode, p)
                        hs["edge_cpu_ms_per_handshake"] = (
                            hs["edge_cpu_s"] * 1e3 / p.handshakes)
                        r["handshakes"] = hs
                    raw[mode].append(r)
        finally:
            edge.stop()
            os.environ.pop("EDGE_RELAY_CA_FILE", None)
    summary: dict[str, dict[str, float]] = {}
    figures = {
        "rtt_p50_us": ("rtt", "p50_us"), "rtt_p99_us": ("rtt", "p99_us"),
        "rtt_lost": ("rtt", "lost"),
        "deliveries_per_s": ("saturation", "deliveries_per_s"),
        "delivered_fraction": ("saturation", "delivered_fraction"),
        "edge_cpu_us_per_delivery": ("saturation", "edge_cpu_us_per_delivery"),
        "loadgen_cpu_s_saturation": ("saturation", "loadgen_cpu_s"),
        "edge_cpu_ms_per_handshake": ("handshakes", "edge_cpu_ms_per_handshake"),
        "client_ms_per_handshake": ("handshakes", "client_ms_each"),
    }
    for mode, runs in raw.items():
        summary[mode] = {}
        for name, (phase, key) in figures.items():
            vals = [float(r[phase][key]) for r in runs if phase in r]
            if vals:
                summary[mode][name] = statistics.median(vals)
    return {"meta": {"scenario": "transports", "timestamp": time.strftime("%Y%m%dT%H%M%S"),
                     "params": asdict(p), "python": platform.python_version(),
                     "cpu_count": os.cpu_count(), "aggregate": f"median of {p.runs} runs"},
            "summary": summary, "runs": raw}


_ROWS = [
    ("RTT p50 µs", "rtt_p50_us", "{:.0f}"), ("RTT p99 µs", "rtt_p99_us", "{:.0f}"),
    ("deliveries/s at saturation", "deliveries_per_s", "{:,.0f}"),
    ("delivered fraction", "delivered_fraction", "{:.3f}"),
    ("edge CPU µs per delivery", "edge_cpu_us_per_delivery", "{:.1f}"),
    ("edge CPU ms per handshake", "edge_cpu_ms_per_handshake", "{:.2f}"),
    ("client ms per handshake", "client_ms_per_handshake", "{:.2f}"),
]


def markdown(doc: dict[str, Any]) -> str:
    """The summary table: one column per mode."""
    s = doc["summary"]
    meta = doc["meta"]
    lines = [f"# bench transports — {meta['timestamp']}", "",
             ", ".join(f"{k}={v}" for k, v in meta["params"].items()),
             f"({meta['aggregate']}; {meta['cpu_count']} CPUs, Python {meta['python']})", "",
             "| figure | " + " | ".join(MODES) + " |", "|---|" + "---|" * len(MODES)]
    for label, key, fmt in _ROWS:
        cells = [fmt.format(s[m][key]) if key in s[m] else "-" for m in MODES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_transports_cli(p: TransportsParams, out: Path, quiet: bool) -> int:
    """Measure, print the Markdown summary, write JSON + Markdown under ``out``."""
    if p.payload_size < 8:
        raise BenchError("--payload-size must be at least 8")
    if p.payload_size > 1100:
        raise BenchError("--payload-size must be at most 1100 (datagrams must fit a packet)")
    doc = measure(p, quiet)
    md = markdown(doc)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"transports-{doc['meta']['timestamp']}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    print(f"report: {stem.with_suffix('.json')}", file=sys.stderr)
    return 0
