"""What an uplink entry does to the global view, as a list of Redis operations (sans-I/O).

:func:`compile_entry` turns one :class:`~edge_node.uplink.wire.Entry` into *ops*, each a
list of strings: a plain Redis command (``["HINCRBY", key, field, "1"]``) or one of the
apply script's own operations:

- ``["LWW", data_key, ts_key, ts, f1, v1, ...]``: set each field unless the stored
  timestamp of that field is newer (last writer wins by edge timestamp, so entries
  applied out of order by concurrent workers leave the newest value);
- ``["HMIN"|"HMAX", key, field, value]``: keep the minimum/maximum;
- ``["ROLL", key, name, count, sum, min, max, ...]``: per name, add to ``NAME:count`` and
  ``NAME:sum`` and keep ``NAME:min``/``NAME:max`` (one HMGET and one HSET for all
  names: the same result as HINCRBY, HINCRBYFLOAT, HMIN and HMAX, at a third of the
  Redis calls);
- ``["EXP", key, ms]``: PEXPIRE once per script call;
- ``["ONCE", set_key, member, ttl_ms, dup_field, op, ...]``: run the nested ops only if
  ``member`` is new in the set, else count ``dup_field`` in the shard's stats (telemetry
  pieces: each ``(window, batch)`` counted once, whichever edge sent it and however
  often; device alerts: each raised once per sample);
- ``["KEEP", done_zset, keep, hash, ...]``: keep only the newest ``keep`` finished ids
  (finished commands do not pile up).

The apply script runs an entry's ops only if its idempotency id was not seen before.
Values are stored as JSON text (bytes as ``{"$b64": ...}``) so the API returns them as-is.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from edge_node.contract import KINDS, Entry
from origin.keys import ShardKeys

__all__ = ["EffectSettings", "compile_entry", "to_json", "lag_bucket", "bucket_ms"]

Op = list[Any]

#: Lag buckets: bucket ``b`` holds lags in ``[1.1**(b-1) - 1, 1.1**b - 1)`` ms (10 % wide).
_LOG_BASE = math.log(1.1)


@dataclass(frozen=True, slots=True)
class EffectSettings:
    """Retention of the view."""

    events_keep: int = 100
    alerts_keep: int = 1000
    dead_keep: int = 1000
    rollup_ttl_ms: int = 24 * 3600 * 1000
    #: Finished (acked or expired) commands kept per device; window summaries and raw
    #: samples kept per device.
    commands_keep: int = 50
    windows_keep: int = 120
    raw_keep: int = 1000


def _default(o: Any) -> Any:
    if isinstance(o, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(o)).decode()}
    return str(o)


#: One encoder for every call (``json.dumps`` with options builds a new one each time).
_encode = json.JSONEncoder(separators=(",", ":"), default=_default).encode


def to_json(v: Any) -> str:
    """JSON text of a msgpack-decoded value (bytes become ``{"$b64": ...}``)."""
    return _encode(v)


def lag_bucket(lag_ms: float) -> int:
    """Histogram bucket of a lag in milliseconds (negative lags count as 0)."""
    return int(math.log(max(lag_ms, 0.0) + 1.0) / _LOG_BASE)


def bucket_ms(b: int) -> float:
    """Upper bound, in ms, of bucket ``b``."""
    return float(1.1 ** (b + 1) - 1.0)


def _num(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _rollup(k: ShardKeys, e: Entry, cfg: EffectSettings) -> list[Op]:
    """A closed telemetry window: each ``(window, batch)`` piece adds to the per-minute
    rollup once (``ONCE``); the window summary is kept in a capped list."""
    body = e.body
    if not isinstance(body, dict) or type(body.get("w")) is not int:
        return []
    w = body["w"]
    pieces = body.get("p")
    if not isinstance(pieces, list):
        return []
    minute = w // 60000
    rk, meta = k.dev(e.key, f"roll:{minute}"), k.dev(e.key, "meta")
    seen = k.dev(e.key, f"pieces:{minute}")
    ttl = str(cfg.rollup_ttl_ms)
    ops: list[Op] = []
    for piece in pieces:
        if not (isinstance(piece, list) and len(piece) == 2 and type(piece[0]) is int
                and isinstance(piece[1], dict)):
            continue
        roll: list[str] = []
        total = 0
        for name, agg in piece[1].items():
            if not (isinstance(name, str) and isinstance(agg, list) and len(agg) == 4
                    and type(agg[0]) is int and agg[0] > 0 and all(_num(x) for x in agg)):
                continue
            n = agg[0]
            total += n
            roll += [name, str(n), repr(float(agg[1])), repr(float(agg[2])),
                     repr(float(agg[3]))]
        if not roll:
            continue
        sub: list[Op] = [["ROLL", rk, *roll], ["HINCRBY", meta, "samples", str(total)],
                         ["HINCRBY", k.stats, "iot_samples", str(total)],
                         ["HINCRBY", k.stats, "iot_pieces", "1"]]
        ops.append(["ONCE", seen, f"{w}:{piece[0]}", ttl, "iot_piece_dups", *sub])
    ops += [["EXP", rk, ttl], ["HINCRBY", k.stats, "iot_rollups", "1"],
            ["HMAX", meta, "last_seen", str(e.ts_ms)]]
    metrics = body.get("m")
    if isinstance(metrics, dict) and metrics:
        win = to_json({"w": w, "len": body.get("len"), "n": body.get("n"), "m": metrics,
                       "edge_ts": e.ts_ms})
        ops += [["LPUSH", k.dev(e.key, "windows"), win],
                ["LTRIM", k.dev(e.key, "windows"), "0", str(cfg.windows_keep - 1)]]
        last = [x for name, m in metrics.items() if isinstance(name, str)
                and isinstance(m, dict) and _num(m.get("last"))
                for x in (name, to_json(m["last"]))]
        if last:
            ops.append(["LWW", k.dev(e.key, "last"), k.dev(e.key, "last_ts"),
                        str(w + int(body.get("len") or 0)), *last])
    raw = body.get("raw")
    if isinstance(raw, list) and raw:
        ops += [["LPUSH", k.dev(e.key, "raw"), *(to_json(x) for x in raw[-cfg.raw_keep:])],
                ["LTRIM", k.dev(e.key, "raw"), "0", str(cfg.raw_keep - 1)]]
    return ops


def compile_entry(k: ShardKeys, edge: str, e: Entry, cfg: EffectSettings) -> list[Op]:
    """Ops that apply ``e`` (sent by ``edge``) to shard ``k``'s view; ``[]`` = dead letter."""
    ts = str(e.ts_ms)
    body = e.body
    if e.kind not in KINDS:
        return []
    if e.kind == "telemetry":
        if not isinstance(body, dict):
            return []
        rk = k.dev(e.key, f"roll:{e.ts_ms // 60000}")
        ops: list[Op] = []
        roll: list[str] = []
        last: list[str] = []
        for name, v in body.items():
            if not isinstance(name, str) or not _num(v):
                continue
            val = repr(float(v))
            roll += [name, "1", val, val, val]
            # repr of a finite int or float is its JSON text (as to_json would give).
            last += [name, repr(v)]
        if roll:
            ops.append(["ROLL", rk, *roll])
        ops.append(["EXP", rk, str(cfg.rollup_ttl_ms)])
        if last:
            ops.append(["LWW", k.dev(e.key, "last"), k.dev(e.key, "last_ts"), ts, *last])
        ops.append(["HMAX", k.dev(e.key, "meta"), "last_seen", ts])
        return ops
    if e.kind == "rollup":
        return _rollup(k, e, cfg)
    if e.kind == "shadow":
        if not isinstance(body, dict) or not body:
            return []
        # "_v": the device's own version (edges send it); else count versions here.
        ver = body.get("_v")
        fields = [x for name, v in body.items() if isinstance(name, str) and name != "_v"
                  for x in (name, to_json(v))]
        vop = (["HMAX", k.dev(e.key, "meta"), "version", str(ver)]
               if type(ver) is int and ver >= 0 else
               ["HINCRBY", k.dev(e.key, "meta"), "version", "1"])
        ops = [vop, ["HMAX", k.dev(e.key, "meta"), "last_seen", ts]]
        if fields:
            ops.insert(0, ["LWW", k.dev(e.key, "reported"), k.dev(e.key, "reported_ts"), ts,
                           *fields])
        return ops
    if e.kind == "command_ack":
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return []
        cid, status = body["id"], str(body.get("status", "acked"))
        done = k.dev(e.key, "cmddone")
        return [["HSET", k.dev(e.key, "cmdstatus"), cid, status],
                ["ZREM", k.dev(e.key, "cmdq"), cid],
                ["ZADD", done, ts, cid],
                ["KEEP", done, str(cfg.commands_keep), k.dev(e.key, "cmds"),
                 k.dev(e.key, "cmdstatus")]]
    if e.kind == "room_snapshot":
        return [["LWW", k.room(e.key, "snap"), k.room(e.key, "snap_ts"), ts,
                 "snapshot", to_json(body), "edge", edge, "ts", ts]]
    if e.kind == "room_event":
        ev = to_json({"edge": edge, "seq": e.seq, "ts": e.ts_ms, "body": body})
        return [["LPUSH", k.room(e.key, "events"), ev],
                ["LTRIM", k.room(e.key, "events"), "0", str(cfg.events_keep - 1)],
                ["HINCRBY", k.room(e.key, "meta"), "events", "1"],
                ["HMAX", k.room(e.key, "meta"), "last_event_ts", ts]]
    if e.kind == "presence":
        if not isinstance(body, dict) or not isinstance(body.get("member"), str):
            return []
        return [["LWW", k.room(e.key, "presence"), k.room(e.key, "presence_ts"), ts,
                 body["member"], to_json({**body, "edge": edge, "ts": e.ts_ms})]]
    if e.kind == "session":
        if not isinstance(body, dict):
            return []
        where = str(body.get("edge") or edge)
        online = "1" if body.get("online", True) else "0"
        return [["LWW", k.sess(e.key, "state"), k.sess(e.key, "state_ts"), ts,
                 "online", online, "edge", where, "state", to_json(body), "ts", ts]]
    if e.kind == "alert":
        al = to_json({"edge": edge, "key": e.key, "ts": e.ts_ms, "body": body})
        ops = [["LPUSH", k.alerts, al], ["LTRIM", k.alerts, "0", str(cfg.alerts_keep - 1)]]
        if isinstance(body, dict) and type(body.get("ts")) is int and body.get("metric"):
            # A device alert names its sample: the same one raised again (the batch was
            # re-sent to another edge after a failover) is recorded once.
            return [["ONCE", k.dev(e.key, "alerts_seen"),
                     f"{body['metric']}:{body['ts']}:{body.get('state', '')}",
                     str(cfg.rollup_ttl_ms), "iot_alert_dups", *ops]]
        return ops
    # edge_status
    return [["LWW", k.edge(e.key, "status"), k.edge(e.key, "status_ts"), ts,
             "status", to_json(body), "ts", ts]]
