"""``edge-relay demo``: a local cluster, simulated players, a summary of what they saw.

Players are spread over the edges so every room spans several edges; each
publishes reliable messages on an open-loop schedule (latency is measured
from the *intended* send time, so a stall is not hidden).  At the end every
receiver's set of messages is compared with what was acknowledged to the
publishers in its room: ``lost`` and ``duplicates`` must both be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import struct
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from client_sdk import Client, ReceivedMessage, connect
from client_sdk.errors import EdgeRelayError
from client_sdk.protocol import mint_token

from .cluster import LocalCluster
from .redis_server import RedisUnavailable

__all__ = ["cmd_demo", "run_demo", "DemoConfig"]

_HDR = struct.Struct("!IIq")  # player index, sequence, intended send time (ns)


@dataclass
class DemoConfig:
    """Demo parameters (see ``edge-relay demo --help``)."""

    edges: int = 3
    players: int = 50
    rooms: int = 10
    rate: float = 20.0
    duration: float = 20.0
    payload_size: int = 64


@dataclass
class _Player:
    idx: int
    room: str
    client: Client
    received: dict[tuple[int, int], int] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    failed: int = 0
    sent: int = 0


class _Progress:
    def __init__(self, total: float) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, elapsed: float, line: str) -> None:
        if self.tty:
            print(f"\r[{elapsed:5.1f}s/{self.total:.0f}s] {line}   ", end="", file=sys.stderr,
                  flush=True)
        elif elapsed - self.last >= 5.0 or elapsed >= self.total:
            self.last = elapsed
            print(f"[{elapsed:5.1f}s/{self.total:.0f}s] {line}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _scrape(http_url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(http_url + "/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        if "{" not in name:
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


async def run_demo(cfg: DemoConfig, cluster: LocalCluster) -> dict[str, Any]:
    """Run the players against ``cluster`` and return the summary dict."""
    now = time.time()
    urls = cluster.urls
    hist = HdrHistogram(1, 60_000_000, 3)  # microseconds
    players: list[_Player] = []

    def on_message(p: _Player) -> Any:
        def cb(m: ReceivedMessage) -> None:
            pidx, seq, intended = _HDR.unpack_from(m.payload)
            key = (pidx, seq)
            n = p.received.get(key, 0)
            p.received[key] = n + 1
            if n == 0:
                hist.record_value(max(1, (time.perf_counter_ns() - intended) // 1000))
        return cb

    for i in range(cfg.players):
        # Rotate edges so each room has members on several edges.
        url = urls[i % len(urls)]
        order = [url] + [u for u in urls if u != url]
        tok = mint_token(cluster.secret, f"player-{i}", "player", ["room-*"], now=now)
        client = await connect(order, tok, name=f"demo-player-{i}")
        players.append(_Player(i, f"room-{i % cfg.rooms}", client))
    for p in players:
        await p.client.join(p.room, echo=False, on_message=on_message(p))
    await asyncio.sleep(0.3)  # let cross-edge tails and presence settle

    interval = 1.0 / cfg.rate
    pad = b"\x00" * max(0, cfg.payload_size - _HDR.size)
    progress = _Progress(cfg.duration)
    start = time.perf_counter()

    async def publisher(p: _Player) -> None:
        seq = 0
        phase = (p.idx / cfg.players) * interval  # spread players over the interval
        while True:
            intended = start + phase + seq * interval
            if intended - start >= cfg.duration:
                return
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            seq += 1
            payload = _HDR.pack(p.idx, seq, int(intended * 1e9)) + pad
            try:
                fut = p.client.publish_nowait(p.room, payload)
            except EdgeRelayError:
                p.failed += 1
                continue
            p.sent += 1
            assert fut is not None
            fut.add_done_callback(functools.partial(_acked, seq=seq, p=p))

    def _acked(f: asyncio.Future[Any], *, seq: int, p: _Player) -> None:
        if f.cancelled() or f.exception() is not None:
            p.failed += 1
        else:
            p.acked.add(seq)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.5)
            el = time.perf_counter() - start
            sent = sum(len(p.acked) for p in players)
            deliv = sum(len(p.received) for p in players)
            p99 = hist.get_value_at_percentile(99) / 1000 if hist.total_count else 0.0
            progress.show(min(el, cfg.duration), f"acked {sent:6d}  delivered {deliv:7d}  "
                          f"p99 {p99:6.2f} ms")

    tick = asyncio.get_running_loop().create_task(ticker())
    await asyncio.gather(*(publisher(p) for p in players))
    # Drain: wait until every ack is in and deliveries stop changing (bounded).
    deadline = time.perf_counter() + 5.0
    last = -1
    while time.perf_counter() < deadline:
        deliv = sum(len(p.received) for p in players)
        pending = sum(p.sent - len(p.acked) - p.failed for p in players)
        if deliv == last and pending == 0:
            break
        last = deliv
        await asyncio.sleep(0.25)
    tick.cancel()
    progress.done()
    elapsed = time.perf_counter() - start

    rtts = sorted([await p.client.ping() for p in players[: min(10, len(players))]])
    members: dict[str, list[_Player]] = defaultdict(list)
    for p in players:
        members[p.room].append(p)
    expected = delivered = dups = lost = 0
    for room_players in members.values():
        for rcv in room_players:
            for pub in room_players:
                if pub is rcv:
                    continue
                for seq in pub.acked:
                    expected += 1
                    n = rcv.received.get((pub.idx, seq), 0)
                    if n == 0:
                        lost += 1
                    else:
                        delivered += 1
                        dups += n - 1
    history = await _history(cluster.redis_url, list(members))
    history["matches_sent"] = history["stream_entries"] == sum(len(p.acked) for p in players)
    edges = []
    for e in cluster.edges:
        m = _scrape(e.http_url)
        edges.append({
            "id": e.edge_id, "url": e.url, "pid": e.pid,
            "connections": int(m.get("edge_connections", 0)),
            "messages_out": int(m.get("edge_messages_out_total", 0)),
            "remote_deliveries": int(m.get("edge_remote_deliveries_total", 0)),
            "stream_appended": int(m.get("edge_stream_appended_total", 0)),
        })
    for p in players:
        await p.client.close()
    sent = sum(len(p.acked) for p in players)
    pct = {k: hist.get_value_at_percentile(v) / 1000 for k, v in
           (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))}
    return {
        "config": {"edges": cfg.edges, "players": cfg.players, "rooms": cfg.rooms,
                   "rate_hz": cfg.rate, "duration_s": cfg.duration,
                   "payload_bytes": cfg.payload_size},
        "reliable": {"sent": sent, "failed": sum(p.failed for p in players),
                     "expected": expected, "delivered": delivered, "lost": lost,
                     "duplicates": dups},
        "latency_ms": {**{k: round(v, 3) for k, v in pct.items()},
                       "max": round(hist.get_max_value() / 1000, 3),
                       "mean": round(hist.get_mean_value() / 1000, 3)},
        "rtt_ms": {"median": round(rtts[len(rtts) // 2] * 1000, 3) if rtts else None},
        "throughput": {"deliveries_per_s": round(delivered / max(elapsed, 1e-9), 1)},
        "history": history,
        "edges": edges,
        "ok": lost == 0 and dups == 0,
    }


async def _history(url: str, rooms: list[str]) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from .redis_keys import room_log

    r = aioredis.Redis.from_url(url)
    try:
        n = 0
        for room in rooms:
            n += await r.xlen(room_log(room))
        return {"rooms": len(rooms), "stream_entries": n}
    finally:
        await r.aclose()


def render_summary(s: dict[str, Any]) -> str:
    """The human-readable summary table."""
    c, rel, lat = s["config"], s["reliable"], s["latency_ms"]
    verdict = "OK: nothing lost, nothing duplicated" if rel["lost"] == 0 and \
        rel["duplicates"] == 0 else "PROBLEM: messages lost or duplicated"
    lines = [
        "",
        f"edge-relay demo: {c['edges']} edges, {c['players']} players in {c['rooms']} rooms, "
        f"{c['rate_hz']:g} Hz each, {c['duration_s']:g} s",
        "",
        f"  reliable.sent        {rel['sent']:>10}   (acknowledged by the room owner)",
        f"  reliable.expected    {rel['expected']:>10}   (one per other member of the room)",
        f"  reliable.delivered   {rel['delivered']:>10}",
        f"  reliable.lost        {rel['lost']:>10}",
        f"  reliable.duplicates  {rel['duplicates']:>10}",
        f"  latency_ms           p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  "
        f"p99 {lat['p99']:.3f}  p99.9 {lat['p999']:.3f}  max {lat['max']:.3f}",
        f"  rtt_ms (median)      {s['rtt_ms']['median']}",
        f"  deliveries/s         {s['throughput']['deliveries_per_s']:>10}",
        f"  history              {s['history']['stream_entries']} entries in "
        f"{s['history']['rooms']} room streams (Redis)",
        "",
        "  edge       connections  delivered  via-redis  appended",
    ]
    for e in s["edges"]:
        lines.append(f"  {e['id']:10} {e['connections']:>11}  {e['messages_out']:>9}  "
                     f"{e['remote_deliveries']:>9}  {e['stream_appended']:>8}")
    lines += ["", f"  {verdict}", ""]
    return "\n".join(lines)


def cmd_demo(a: Any) -> int:
    """``edge-relay demo``."""
    from .cli import UserError, install_uvloop

    cfg = DemoConfig(edges=a.edges, players=a.players, rooms=a.rooms, rate=a.rate,
                     duration=a.duration)
    if not (1 <= cfg.edges <= 16 and 2 <= cfg.players <= 5000 and 1 <= cfg.rooms
            <= cfg.players and 0 < cfg.rate <= 1000 and 0 < cfg.duration <= 3600):
        raise UserError("need 1-16 edges, 2-5000 players, 1..players rooms, "
                        "0 < rate <= 1000, 0 < duration <= 3600")
    if a.json:
        parent = os.path.dirname(os.path.abspath(a.json))
        if not os.path.isdir(parent):
            raise UserError(f"--json: directory {parent} does not exist")
    print(f"starting Redis and {cfg.edges} edges ...", file=sys.stderr, flush=True)
    cluster = LocalCluster(cfg.edges)
    try:
        cluster.start()
    except (RedisUnavailable, RuntimeError) as exc:
        raise UserError(str(exc)) from exc
    try:
        d = cluster.describe()
        print(f"redis {d['redis']}{' (embedded)' if d['embedded_redis'] else ''}; edges "
              + ", ".join(e["url"] for e in d["edges"]), file=sys.stderr, flush=True)
        install_uvloop()
        summary = asyncio.run(run_demo(cfg, cluster))
    finally:
        cluster.stop()
    print(render_summary(summary))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(summary, fh, indent=2)
        print(f"wrote {a.json}", file=sys.stderr)
    return 0 if summary["reliable"]["lost"] == 0 and summary["reliable"]["duplicates"] == 0 \
        else 1
