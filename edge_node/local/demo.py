"""``edge-relay demo``: a local cluster, simulated players, an edge killed half-way,
and a summary of what the players saw.

Players are spread over the edges so every room spans several edges; each
publishes reliable messages on an open-loop schedule (latency is measured
from the *intended* send time, so a stall is not hidden).  Half-way, one edge
is SIGKILLed: its players resume on the others (replay from the room
streams), its rooms move to a new owner when its leases lapse, and the
publishers' outboxes re-send what was never confirmed durable.  At the end
every receiver's messages are compared with what was acknowledged to the
publishers in its room: ``lost`` and ``duplicates`` must both be 0.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import struct
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from client_sdk import Client, ReceivedMessage, connect
from client_sdk.errors import EdgeRelayError
from client_sdk.transport import TlsOptions
from edge_node.local.cluster import LocalCluster
from edge_node.local.demo_app import HOT
from edge_node.local.demo_chaos import failover_summary, handover_summary
from edge_node.local.demo_functions import (
    FUNCTIONS_SPEC,
    RPC_PATTERNS,
    RpcCallers,
    WebhookReceiver,
    function_metrics,
    functions_ok,
)
from edge_node.local.demo_report import render_summary
from edge_node.local.demo_tokens import player_token_ttl, provider, token_summary, tokens_ok
from edge_node.local.redis_server import RedisUnavailable
from edge_node.local.scrape import LABELS, scrape_metrics
from edge_node.runtime.gc_tuning import tune_gc

__all__ = ["cmd_demo", "run_demo", "DemoConfig"]

_HDR = struct.Struct("!IIq")  # player index, sequence, intended send time (ns)


@dataclass
class DemoConfig:
    """Demo parameters (see ``edge-relay demo --help``)."""

    edges: int = 3
    kill: bool = True
    players: int = 50
    rooms: int = 10
    rate: float = 20.0
    duration: float = 20.0
    payload_size: int = 64
    #: Simulated IoT devices and their samples/s each (0 devices: none).
    devices: int = 500
    device_rate: float = 10.0
    #: Bots playing the arena game room (0: none).
    arena_bots: int = 6
    #: Players that also call the leaderboard RPCs (0: none).
    rpc_callers: int = 10
    #: Two spectators that stop reading for a third of the run (delivery policies).
    spectators: bool = True


@dataclass
class _Player:
    idx: int
    room: str
    client: Client
    received: dict[tuple[int, int], int] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    edge_at_kill: str = ""
    edge_at_drain: str = ""
    acked: set[int] = field(default_factory=set)
    failed: int = 0
    sent: int = 0
    transport: str = "ws"  # the transport it started on


class _Progress:
    def __init__(self, total: float) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, elapsed: float, line: str) -> None:
        if self.tty:
            print(f"\r[{elapsed:5.1f}s/{self.total:.0f}s] {line}   ", end="", file=sys.stderr,
                  flush=True)
        elif elapsed - self.last >= 5.0 or (elapsed >= self.total > self.last):
            self.last = elapsed
            print(f"[{elapsed:5.1f}s/{self.total:.0f}s] {line}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _origin_call(url: str, api_key: str, method: str = "GET") -> tuple[int, Any]:
    """``(HTTP status, JSON body or None)`` of an origin API call with an API key;
    status 0 when nothing answered."""
    req = urllib.request.Request(url, method=method, headers={"X-API-Key": api_key})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code), None
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def _forecast_summary(cluster: LocalCluster) -> dict[str, Any]:
    """The origin's demand forecast for the demo's region (``local``)."""
    if cluster.origin is None:
        return {}
    _, body = _origin_call(f"{cluster.origin.http_url}/v1/forecast", cluster.api_key)
    for r in (body or {}).get("regions", []):
        if r.get("region") == "local":
            return {k: r.get(k) for k in ("connections", "forecast_connections",
                                          "messages_per_s", "forecast_messages_per_s",
                                          "recommended_replicas", "reactive_replicas")}
    return {}


def _room_machines(scrapes: list[dict[str, float]]) -> dict[str, Any]:
    """Room machine state changes and present states, summed over ``scrapes``."""
    changes: dict[str, int] = defaultdict(int)
    states: dict[str, int] = defaultdict(int)
    for m in scrapes:
        for name, value in m.items():
            labels = dict(LABELS.findall(name))
            if name.startswith("edge_room_transitions_total{"):
                changes[f"{labels['from']}->{labels['to']}"] += int(value)
            elif name.startswith("edge_rooms_by_state{"):
                states[labels["state"]] += int(value)
    return {"edges": len(scrapes), "transitions": dict(sorted(changes.items())),
            "by_state": dict(sorted(states.items()))}


async def run_demo(cfg: DemoConfig, cluster: LocalCluster,
                   webhook: WebhookReceiver | None = None) -> dict[str, Any]:
    """Run the players against ``cluster`` and return the summary dict; ``webhook``: the
    receiver the cluster's origin POSTs alert events to."""
    now = time.time()
    board = f"scores-{int(now)}"
    ttl = player_token_ttl(cfg.duration)
    urls = cluster.urls
    hist = HdrHistogram(1, 60_000_000, 3)  # microseconds
    steady = HdrHistogram(1, 60_000_000, 3)  # intended before the kill
    kill_ns = [2**62]
    players: list[_Player] = []
    # Latency per transport the receiving player started on (every 3rd is QUIC).
    by_transport = {t: HdrHistogram(1, 60_000_000, 3) for t in ("ws", "quic")}
    # Before the kill: publisher and receiver on one edge, or on two (via Redis).
    by_path = {k: HdrHistogram(1, 60_000_000, 3) for k in ("same_edge", "cross_edge")}

    def on_message(p: _Player) -> Any:
        def cb(m: ReceivedMessage) -> None:
            pidx, seq, intended = _HDR.unpack_from(m.payload)
            key = (pidx, seq)
            n = p.received.get(key, 0)
            p.received[key] = n + 1
            now_ns = time.perf_counter_ns()
            p.arrivals.append(now_ns / 1e9)
            if n == 0:
                us = max(1, (now_ns - intended) // 1000)
                hist.record_value(us)
                by_transport[p.transport].record_value(us)
                if intended < kill_ns[0]:
                    steady.record_value(us)
                    same = players[pidx].client.edge_id == p.client.edge_id
                    by_path["same_edge" if same else "cross_edge"].record_value(us)
        return cb

    for i in range(cfg.players):
        # Rotate edges so each room has members on several edges.
        url = urls[i % len(urls)]
        order = [url] + [u for u in urls if u != url]
        quic_url = cluster.quic_urls[i % len(urls)]
        transport = "quic" if quic_url and i % 3 == 2 else "ws"
        if transport == "quic":
            order = [quic_url, *order]  # its edge's WebSocket URL is the fallback
        client = await connect(order, name=f"demo-player-{i}", backoff_base=0.2,
                               backoff_cap=2.0, tls=TlsOptions(ca_file=cluster.ca_file or None),
                               token_provider=provider(cluster.secret, f"player-{i}",
                                                       ["room-*", board], RPC_PATTERNS, ttl))
        players.append(_Player(i, f"room-{i % cfg.rooms}", client, transport=transport))
    for p in players:
        await p.client.join(p.room, echo=False, on_message=on_message(p))
    step = max(1, len(players) // max(1, cfg.rpc_callers))
    callers = RpcCallers([(p.client, f"player-{p.idx}") for p in players[::step]
                          ][:cfg.rpc_callers], board)
    fleet = None
    if cfg.devices:
        from edge_node.local.demo_devices import DeviceFleet

        fleet = DeviceFleet(urls, cluster.secret, cluster.redis_url, devices=cfg.devices,
                            rate=cfg.device_rate)
        await fleet.start()
    # Arenas: one homed on the edge the demo drains (it moves live with its lease), one
    # on the edge it kills (a neighbour restores it); without chaos, one on the first.
    arenas: list[Any] = []
    if cfg.arena_bots:
        from edge_node.local.demo_arena import ArenaBots

        n_edges = len(cluster.edges)
        homes = {}
        if cfg.kill and n_edges >= 3:
            homes["drain"] = n_edges - 1
        if cfg.kill and n_edges > 1:
            homes["kill"] = 1
        for label, home in (homes or {"demo": 0}).items():
            arenas.append(ArenaBots(urls, cluster.secret, bots=cfg.arena_bots,
                                    ca_file=cluster.ca_file or "", home=home, label=label))
        for a in arenas:
            await a.start()
    spectators = None
    if cfg.spectators:
        from edge_node.local.demo_spectators import Spectators

        spectators = Spectators(urls[0], cluster.secret, ca_file=cluster.ca_file or "")
        await spectators.start()
    # The players and devices live to the end: keep them out of the collector's
    # passes, whose pauses (58-84 ms measured) would otherwise show as gaps.
    tune_gc()
    await asyncio.sleep(0.3)  # let cross-edge tails and presence settle

    interval = 1.0 / cfg.rate
    pad = b"\x00" * max(0, cfg.payload_size - _HDR.size)
    progress = _Progress(cfg.duration)
    from edge_node.local.machine_share import CpuShares

    shares = CpuShares({
        "edges": [e.pid for e in cluster.edges],
        "redis": [cluster.redis.pid] if cluster.redis is not None else [],
        "origin": [cluster.origin.pid] if cluster.origin is not None else []})
    shares.start()
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
            shares.sample()  # an edge that exits (drained) counts up to here
            el = time.perf_counter() - start
            sent = sum(len(p.acked) for p in players)
            deliv = sum(len(p.received) for p in players)
            p99 = hist.get_value_at_percentile(99) / 1000 if hist.total_count else 0.0
            progress.show(min(el, cfg.duration), f"acked {sent:6d}  delivered {deliv:7d}  "
                          f"p99 {p99:6.2f} ms")

    killed: dict[str, Any] = {}
    drained: dict[str, Any] = {}

    async def drainer() -> None:
        # A rolling deploy: SIGTERM the last edge; its players are handed over live.
        await asyncio.sleep(cfg.duration / 3)
        victim = cluster.edges[-1]
        for p in players:
            p.edge_at_drain = p.client.edge_id
        drained["t"] = time.perf_counter()
        drained["edge"] = victim.edge_id
        how = "SIGTERM"
        if cluster.origin is not None:
            # An operator's drain through the origin's admin API (same path as SIGTERM).
            status, _ = await asyncio.to_thread(
                _origin_call, f"{cluster.origin.http_url}/v1/edges/{victim.edge_id}/drain",
                cluster.api_key, "POST")
            how = "POST /v1/edges/{id}/drain" if status == 202 else how
        if how == "SIGTERM":
            victim.signal(signal.SIGTERM)
        for a in arenas:
            a.event("drain", victim.edge_id)
        drained["how"] = how
        print(f"\n[{time.perf_counter() - start:5.1f}s] {how} {victim.edge_id} "
              f"(pid {victim.pid}): drain with handover", file=sys.stderr, flush=True)

    async def killer() -> None:
        await asyncio.sleep(cfg.duration * (2 / 3 if drain_enabled else 1 / 2))
        victim = cluster.edges[1 % len(cluster.edges)]
        for p in players:
            p.edge_at_kill = p.client.edge_id
        killed["t"] = time.perf_counter()
        kill_ns[0] = int(killed["t"] * 1e9)
        killed["edge"] = victim.edge_id
        shares.sample()  # the victim's CPU until now still counts
        victim.kill()
        for a in arenas:
            a.event("kill", victim.edge_id)
        print(f"\n[{time.perf_counter() - start:5.1f}s] SIGKILL {victim.edge_id} "
              f"(pid {victim.pid})", file=sys.stderr, flush=True)

    loop = asyncio.get_running_loop()
    drain_enabled = cfg.kill and len(cluster.edges) >= 3
    tick = loop.create_task(ticker())
    chaos = [loop.create_task(drainer())] if drain_enabled else []
    if cfg.kill and len(cluster.edges) > 1:
        chaos.append(loop.create_task(killer()))
    await asyncio.gather(*(publisher(p) for p in players),
                         *([fleet.run(cfg.duration)] if fleet is not None else []),
                         *(a.run(cfg.duration) for a in arenas), callers.run(cfg.duration),
                         *([spectators.run(cfg.duration)] if spectators is not None else []))
    await asyncio.gather(*chaos)
    # Drain: wait until every ack is in and deliveries stop changing (bounded).
    deadline = time.perf_counter() + 15.0
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
    machine = shares.stop()
    elapsed = time.perf_counter() - start

    functions = await callers.summary()
    rtts = sorted([await p.client.ping() for p in players[: min(10, len(players))]
                   if p.client.connected])
    failover = failover_summary(players, killed)
    handover = handover_summary(players, drained, killed)
    origin = await _origin_summary(cluster)
    iot = await fleet.summary() if fleet is not None else {"devices": 0}
    game: dict[str, Any] = {"bots": 0}
    if arenas:
        rooms = [await a.summary() for a in arenas]
        game = {"bots": sum(r["bots"] for r in rooms), "arenas": rooms,
                **{k: sum(r[k] for r in rooms) for k in (
                    "divergences", "inputs_sent", "inputs_acked", "inputs_applied",
                    "inputs_lost", "inputs_applied_twice", "resyncs", "full_states")}}
    forecast = await asyncio.to_thread(_forecast_summary, cluster)
    delivery = await spectators.summary() if spectators is not None else {"ok": True}
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
    scrapes: list[dict[str, float]] = []
    for e in cluster.edges:
        if not e.alive():
            edges.append({"id": e.edge_id, "url": e.url, "pid": e.pid, "killed": True,
                          "exit_code": e.proc.returncode})
            continue
        m = scrape_metrics(e.http_url)
        scrapes.append(m)
        edges.append({
            "id": e.edge_id, "url": e.url, "pid": e.pid,
            "connections": int(m.get("edge_connections", 0)),
            "messages_out": int(m.get("edge_messages_out_total", 0)),
            "remote_deliveries": int(m.get("edge_remote_deliveries_total", 0)),
            "stream_appended": int(m.get("edge_stream_appended_total", 0)),
            "replayed": int(m.get("edge_replayed_messages_total", 0)),
            "duplicates_dropped": int(m.get("edge_duplicates_dropped_total", 0)),
            "lease_takeovers": int(m.get("edge_lease_takeovers_total", 0)),
        })
        n_det = m.get("edge_failover_detection_seconds_count", 0.0)
        if n_det and failover.get("killed_edge"):
            # How long after the dead edge's last heartbeat a survivor took its rooms.
            det = 1000.0 * m.get("edge_failover_detection_seconds_sum", 0.0) / n_det
            prev = failover.get("detection_ms")
            failover["detection_ms"] = round(det if prev is None else min(prev, det), 1)
    if webhook is not None:
        await webhook.settle(at_least=iot.get("alerts", 0))
    functions.update(
        telemetry={"handler": "window:too_hot", "threshold_c": HOT,
                   **{k: iot.get(k, 0) for k in ("fan_commands", "devices_cooled",
                                                 "hot_at_end")}},
        webhook=webhook.summary() if webhook is not None else {"deliveries": 0},
        edge_calls=function_metrics(scrapes))
    if arenas:
        from edge_node.local.demo_arena import arena_metrics

        game.update(arena_metrics(scrapes))
    tokens = token_summary([p.client for p in players], scrapes, ttl)
    for p in players:
        await p.client.close()
    sent = sum(len(p.acked) for p in players)
    pct = {k: hist.get_value_at_percentile(v) / 1000 for k, v in
           (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))}
    return {
        "config": {"edges": cfg.edges, "players": cfg.players, "rooms": cfg.rooms,
                   "rate_hz": cfg.rate, "duration_s": cfg.duration,
                   "payload_bytes": cfg.payload_size, "tls": cluster.tls},
        "room_machines": _room_machines(scrapes),
        "reliable": {"sent": sent, "failed": sum(p.failed for p in players),
                     "expected": expected, "delivered": delivered, "lost": lost,
                     "duplicates": dups},
        "latency_ms": {**{k: round(v, 3) for k, v in pct.items()},
                       "max": round(hist.get_max_value() / 1000, 3),
                       "mean": round(hist.get_mean_value() / 1000, 3)},
        "latency_before_kill_ms": {
            k: round(steady.get_value_at_percentile(v) / 1000, 3)
            for k, v in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))},
        "rtt_ms": {"median": round(rtts[len(rtts) // 2] * 1000, 3) if rtts else None},
        "latency_by_transport_ms": {
            t: {"players": sum(1 for p in players if p.transport == t),
                "deliveries": h.get_total_count(),
                **{k: round(h.get_value_at_percentile(v) / 1000, 3)
                   for k, v in (("p50", 50), ("p99", 99))}}
            for t, h in by_transport.items()},
        "latency_by_path_ms": {
            k: {"deliveries": h.get_total_count(),
                **{q: round(h.get_value_at_percentile(v) / 1000, 3)
                   for q, v in (("p50", 50), ("p99", 99))}}
            for k, h in by_path.items()},
        "throughput": {"deliveries_per_s": round(delivered / max(elapsed, 1e-9), 1)},
        "history": history,
        "failover": failover,
        "handover": handover,
        "origin": origin,
        "iot": iot,
        "game": game,
        "functions": functions,
        "tokens": tokens,
        "delivery": delivery,
        "machine": machine,
        "forecast": forecast,
        "edges": edges,
        "ok": lost == 0 and dups == 0 and iot.get("lost", 0) == 0
        and game.get("divergences", 0) == 0 and game.get("inputs_lost", 0) == 0
        and game.get("inputs_applied_twice", 0) == 0 and functions_ok(functions)
        and tokens_ok(tokens, cfg.duration) and delivery["ok"],
    }


async def _origin_summary(cluster: LocalCluster) -> dict[str, Any]:
    """What reached the origin through the uplink (waits until it settles, bounded)."""
    if cluster.origin is None:
        return {"enabled": False}
    from edge_node.redis_io.conn import connect
    from origin.settings import OriginSettings
    from origin.view import origin_stats

    r = connect(cluster.redis_url)
    try:
        last, stats = -1, {}
        for _ in range(40):
            stats = await origin_stats(r, OriginSettings(shards=4))
            if stats["applied"] == last:
                break
            last = stats["applied"]
            await asyncio.sleep(0.25)
    finally:
        await r.aclose()
    return {"enabled": True, "applied": stats.get("applied", 0),
            "duplicates_ignored": stats.get("duplicates_ignored", 0),
            "lag_ms": stats.get("lag_ms", {}), "by_kind": stats.get("by_kind", {})}


async def _history(url: str, rooms: list[str]) -> dict[str, Any]:
    from edge_node.redis_io.conn import connect
    from edge_node.redis_io.keys import room_log

    r = connect(url)
    try:
        n = 0
        for room in rooms:
            n += await r.xlen(room_log(room))
        return {"rooms": len(rooms), "stream_entries": n}
    finally:
        await r.aclose()


def cmd_demo(a: Any) -> int:
    """``edge-relay demo``."""
    from edge_node.cli import UserError, install_uvloop

    cfg = DemoConfig(edges=a.edges, players=a.players, rooms=a.rooms, rate=a.rate,
                     duration=a.duration, kill=not a.no_kill,
                     devices=getattr(a, "devices", 500),
                     arena_bots=getattr(a, "arena_bots", 6),
                     rpc_callers=getattr(a, "rpc_callers", 10),
                     spectators=not getattr(a, "no_spectators", False))
    if not (1 <= cfg.edges <= 16 and 2 <= cfg.players <= 5000 and 1 <= cfg.rooms
            <= cfg.players and 0 < cfg.rate <= 1000 and 0 < cfg.duration <= 3600
            and 0 <= cfg.devices <= 5000 and 0 <= cfg.arena_bots <= 16
            and 0 <= cfg.rpc_callers <= min(100, cfg.players)):
        raise UserError("need 1-16 edges, 2-5000 players, 1..players rooms, "
                        "0 < rate <= 1000, 0 < duration <= 3600, 0-5000 devices, "
                        "0-16 arena bots, 0-100 RPC callers (at most the players)")
    if a.json:
        parent = os.path.dirname(os.path.abspath(a.json))
        if not os.path.isdir(parent):
            raise UserError(f"--json: directory {parent} does not exist")
    print(f"starting Redis and {cfg.edges} edges ...", file=sys.stderr, flush=True)
    from edge_node.local.demo_arena import ARENA_HANDLER

    webhook = WebhookReceiver()
    webhook.start()
    cluster = LocalCluster(cfg.edges, edge_args=["--uplink-rooms", "room-*",
                                                 "--room-handler", ARENA_HANDLER,
                                                 "--functions", FUNCTIONS_SPEC],
                           origin_env={"ORIGIN_WEBHOOKS": f"alert={webhook.url}",
                                       "ORIGIN_WEBHOOK_SECRET": webhook.secret},
                           tls=getattr(a, "tls", False))
    try:
        cluster.start()
    except (RedisUnavailable, RuntimeError) as exc:
        webhook.stop()
        raise UserError(str(exc)) from exc
    try:
        if cluster.tls:  # every simulated client (and the metrics scrape) trusts it
            os.environ["EDGE_RELAY_CA_FILE"] = cluster.ca_file
        d = cluster.describe()
        print(f"redis {d['redis']}{' (embedded)' if d['embedded_redis'] else ''}; edges "
              + ", ".join(e["url"] for e in d["edges"]), file=sys.stderr, flush=True)
        install_uvloop()
        summary = asyncio.run(run_demo(cfg, cluster, webhook))
    finally:
        cluster.stop()
        webhook.stop()
    print(render_summary(summary))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(summary, fh, indent=2)
        print(f"wrote {a.json}", file=sys.stderr)
    f, h = summary["failover"], summary["handover"]
    resumed_all = not f.get("killed_edge") or f["clients_resumed"] == f["clients_on_killed_edge"]
    moved_all = not h.get("drained_edge") or h["clients_moved"] == h["clients_on_drained_edge"]
    return 0 if summary["ok"] and resumed_all and moved_all else 1
