"""Reading the global view and the origin's own counters (used by the API and the CLI)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from edge_node.contract import distance_km, is_draining, live_edges, position_of, rank_edges
from origin.downlink import commands_from
from origin.effects import bucket_ms
from origin.keys import GROUP, ShardKeys
from origin.settings import OriginSettings

__all__ = ["origin_stats", "room_view", "device_view", "recent_alerts", "edge_list",
           "lag_quantiles"]


def _s(b: Any) -> str:
    return b.decode() if isinstance(b, bytes) else str(b)


def _jmap(h: dict[bytes, bytes]) -> dict[str, Any]:
    return {_s(k): json.loads(v) for k, v in h.items()}


def lag_quantiles(buckets: dict[int, int],
                  qs: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)) -> dict[str, float]:
    """Quantiles (upper bucket bounds, ms, 10 % resolution) of a lag bucket histogram:
    keys ``p50``, ``p90``, ``p99``, ``p99.9`` by default."""
    total = sum(buckets.values())
    out: dict[str, float] = {}
    for q in qs:
        name = f"p{round(q * 100, 1):g}"
        if not total:
            out[name] = 0.0
            continue
        need, acc = math.ceil(q * total), 0
        for b in sorted(buckets):
            acc += buckets[b]
            if acc >= need:
                out[name] = round(bucket_ms(b), 3)
                break
    return out


async def origin_stats(r: aioredis.Redis, s: OriginSettings) -> dict[str, Any]:
    """Totals over all shards: ``applied``, ``duplicates_ignored``, ``dead``, ``trimmed``,
    ``claimed``, ``lag_ms`` quantiles, ``lag_buckets``, ``by_kind``, per-shard
    ``stream_length``/``group_lag``/``pending``, ``pending_by_consumer`` and ``iot``
    (telemetry ``samples`` counted into rollups, ``pieces`` applied and
    ``pieces_duplicate`` ignored, ``rollups`` entries applied, ``alerts_duplicate``:
    device alerts raised again for the same sample and ignored)."""
    tot: dict[str, int] = {"applied": 0, "duplicates": 0, "dead": 0, "trimmed": 0,
                           "claimed": 0, "iot_samples": 0, "iot_pieces": 0,
                           "iot_piece_dups": 0, "iot_rollups": 0, "iot_alert_dups": 0}
    buckets: dict[int, int] = {}
    kinds: dict[str, int] = {}
    shards: list[dict[str, Any]] = []
    consumers: dict[str, int] = {}
    for i in range(s.shards):
        k = ShardKeys(i)
        h: Any = await r.hgetall(k.stats)
        for f, v in h.items():
            name, n = _s(f), int(v)
            if name.startswith("lag:"):
                b = int(name[4:])
                buckets[b] = buckets.get(b, 0) + n
            elif name.startswith("k:"):
                kinds[name[2:]] = kinds.get(name[2:], 0) + n
            elif name in tot:
                tot[name] += n
        info: dict[str, Any] = {"shard": i, "stream_length": int(await r.xlen(k.stream))}
        try:
            groups: Any = await r.xinfo_groups(k.stream)
        except ResponseError:  # no stream yet
            groups = []
        for g in groups:
            if _s(g.get("name")) == GROUP:
                info["pending"] = int(g.get("pending") or 0)
                lag = g.get("lag")
                info["group_lag"] = int(lag) if lag is not None else None
        if info.get("pending"):
            summary: Any = await r.xpending(k.stream, GROUP)
            for c in summary.get("consumers") or []:
                name = _s(c["name"])
                consumers[name] = consumers.get(name, 0) + int(c["pending"])
        shards.append(info)
    return {"applied": tot["applied"], "duplicates_ignored": tot["duplicates"],
            "dead": tot["dead"], "trimmed": tot["trimmed"], "claimed": tot["claimed"],
            "lag_ms": lag_quantiles(buckets), "lag_buckets": buckets, "by_kind": kinds,
            "shards": shards, "pending_by_consumer": consumers,
            "iot": {"samples": tot["iot_samples"], "pieces": tot["iot_pieces"],
                    "pieces_duplicate": tot["iot_piece_dups"], "rollups": tot["iot_rollups"],
                    "alerts_duplicate": tot["iot_alert_dups"]}}


async def room_view(r: aioredis.Redis, s: OriginSettings, room: str,
                    events: int = 20) -> dict[str, Any] | None:
    """Latest snapshot, recent events (newest first), presence and counters; None if the
    origin never heard of the room."""
    k = ShardKeys.of(room, s.shards)
    # One transaction: the snapshot, events and counters of one moment (an entry applied
    # between separate reads would show a count that its events list does not hold).
    async with r.pipeline(transaction=True) as p:
        p.hgetall(k.room(room, "snap"))
        p.lrange(k.room(room, "events"), 0, max(events, 1) - 1)
        p.hgetall(k.room(room, "presence"))
        p.hgetall(k.room(room, "meta"))
        snap, evs, pres, meta = await p.execute()
    if not (snap or evs or pres or meta):
        return None
    snapshot = None
    if snap:
        snapshot = {"state": json.loads(snap[b"snapshot"]), "edge": _s(snap.get(b"edge", b"")),
                    "ts": int(snap.get(b"ts", b"0"))}
    members = {m: v for m, v in _jmap(pres).items() if v.get("online", True)}
    return {"id": room, "snapshot": snapshot, "events": [json.loads(e) for e in evs],
            "events_total": int(meta.get(b"events", b"0")), "members": members}


async def device_view(r: aioredis.Redis, s: OriginSettings, device: str,
                      minutes: int = 10) -> dict[str, Any] | None:
    """The device shadow (reported, desired, version), latest values, per-minute rollups of
    the last ``minutes``, ``samples`` (telemetry samples counted, exact), the newest
    edge window summaries (``windows``: count/min/max/mean/last/p50/p95/p99 per metric),
    session state and commands; None if unknown."""
    k = ShardKeys.of(device, s.shards)
    now_min = int(time.time() // 60)
    minutes_read = range(now_min - max(minutes, 1) + 1, now_min + 1)
    # One transaction: the origin applies an entry's effects atomically (a Lua script),
    # and separate reads could straddle one, e.g. the version of report 5 next to the
    # reported fields of report 4.
    async with r.pipeline(transaction=True) as p:
        for name in ("reported", "desired", "meta", "last"):
            p.hgetall(k.dev(device, name))
        p.hgetall(k.sess(device, "state"))
        p.hgetall(k.dev(device, "cmds"))
        p.hgetall(k.dev(device, "cmdstatus"))
        p.lrange(k.dev(device, "windows"), 0, 9)
        for m in minutes_read:
            p.hgetall(k.dev(device, f"roll:{m}"))
        reported, desired, meta, last, sess, recs, states, wins, *rolls = await p.execute()
    cmds = commands_from(recs, states)
    if not (reported or desired or meta or last or sess or cmds):
        return None
    rollups = []
    for m, h in zip(minutes_read, rolls, strict=True):
        if not h:
            continue
        metrics: dict[str, dict[str, float]] = {}
        for f, v in h.items():
            name, _, agg = _s(f).rpartition(":")
            metrics.setdefault(name, {})[agg] = float(v)
        for aggs in metrics.values():
            if aggs.get("count"):
                aggs["avg"] = aggs.get("sum", 0.0) / aggs["count"]
        rollups.append({"minute": m * 60, "metrics": metrics})
    return {
        "id": device,
        "reported": _jmap(reported),
        "desired": _jmap(desired),
        "version": int(meta.get(b"version", b"0")),
        "desired_version": int(meta.get(b"desired_version", b"0")),
        "last_seen_ms": int(meta.get(b"last_seen", b"0")) or None,
        "latest": _jmap(last),
        "rollups": rollups,
        "samples": int(meta.get(b"samples", b"0")),
        "windows": [json.loads(w) for w in wins],
        "online": sess.get(b"online") == b"1",
        "edge": _s(sess.get(b"edge", b"")) or None,
        "commands": cmds,
    }


async def recent_alerts(r: aioredis.Redis, s: OriginSettings, limit: int = 100
                        ) -> list[dict[str, Any]]:
    """Newest alerts over all shards (each shard keeps ``alerts_keep``)."""
    out: list[dict[str, Any]] = []
    for i in range(s.shards):
        raw: Any = await r.lrange(ShardKeys(i).alerts, 0, limit - 1)
        out.extend(json.loads(x) for x in raw)
    out.sort(key=lambda a: a.get("ts", 0), reverse=True)
    return out[:limit]


async def edge_list(r: aioredis.Redis, s: OriginSettings, lat: float | None = None,
                    lon: float | None = None) -> list[dict[str, Any]]:
    """Live edges (fresh registry heartbeat), ``healthy`` unless draining; draining edges
    come last, whatever their distance or load.  With ``lat``/``lon``: nearest first, by
    100 km bands, least loaded first within a band (edges that registered no position
    after the others); otherwise by load (``connections``), least loaded first.  See
    :func:`edge_node.neighbours.geo.rank_edges`."""
    edges: list[dict[str, Any]] = []
    for info in await live_edges(r, s.edge_ttl):
        e: dict[str, Any] = dict(info)
        for f in ("connections", "rooms", "ts", "draining"):
            if f in e:
                with contextlib.suppress(ValueError):
                    e[f] = float(e[f])
        pos = position_of(info)
        if lat is not None and lon is not None and pos is not None:
            e["distance_km"] = round(distance_km(lat, lon, *pos), 1)
        status: Any = await r.hget(ShardKeys.of(info.get("id", ""), s.shards)
                                   .edge(info.get("id", ""), "status"), "status")
        e["status"] = json.loads(status) if status else None
        # A draining edge still heartbeats (it is handing its clients over): it is
        # listed, for operators, but not healthy, and it comes after every healthy one.
        # (``draining`` stays a number, 0 or 1, as SDKs already read it.)
        e["healthy"] = not is_draining(info)
        edges.append(e)
    ranked = rank_edges(edges, (lat, lon) if lat is not None and lon is not None else None)
    return [e for e in ranked if e["healthy"]] + [e for e in ranked if not e["healthy"]]
