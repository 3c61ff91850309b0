"""What an uplink entry does to the global view, as a list of Redis operations (sans-I/O).

:func:`compile_entry` turns one :class:`~edge_node.uplink.wire.Entry` into *ops*, each a
list of strings: a plain Redis command (``["HINCRBY", key, field, "1"]``) or one of the
apply script's own operations:

- ``["LWW", data_key, ts_key, ts, f1, v1, ...]``: set each field unless the stored
  timestamp of that field is newer (last writer wins by edge timestamp, so entries
  applied out of order by concurrent workers leave the newest value);
- ``["HMIN"|"HMAX", key, field, value]``: keep the minimum/maximum;
- ``["EXP", key, ms]``: PEXPIRE once per script call.

The apply script runs an entry's ops only if its idempotency id was not seen before.
Values are stored as JSON text (bytes as ``{"$b64": ...}``) so the API returns them as-is.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from edge_node.uplink.wire import KINDS, Entry

from .keys import ShardKeys

__all__ = ["EffectSettings", "compile_entry", "to_json", "lag_bucket", "bucket_ms"]

Op = list[str]

#: Lag buckets: bucket ``b`` holds lags in ``[1.1**(b-1) - 1, 1.1**b - 1)`` ms (10 % wide).
_LOG_BASE = math.log(1.1)


@dataclass(frozen=True, slots=True)
class EffectSettings:
    """Retention of the view."""

    events_keep: int = 100
    alerts_keep: int = 1000
    dead_keep: int = 1000
    rollup_ttl_ms: int = 24 * 3600 * 1000


def _default(o: Any) -> Any:
    if isinstance(o, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(o)).decode()}
    return str(o)


def to_json(v: Any) -> str:
    """JSON text of a msgpack-decoded value (bytes become ``{"$b64": ...}``)."""
    return json.dumps(v, separators=(",", ":"), default=_default)


def lag_bucket(lag_ms: float) -> int:
    """Histogram bucket of a lag in milliseconds (negative lags count as 0)."""
    return int(math.log(max(lag_ms, 0.0) + 1.0) / _LOG_BASE)


def bucket_ms(b: int) -> float:
    """Upper bound, in ms, of bucket ``b``."""
    return float(1.1 ** (b + 1) - 1.0)


def _num(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


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
        last: list[str] = []
        for name, v in body.items():
            if not isinstance(name, str) or not _num(v):
                continue
            val = repr(float(v))
            ops += [["HINCRBY", rk, f"{name}:count", "1"],
                    ["HINCRBYFLOAT", rk, f"{name}:sum", val],
                    ["HMIN", rk, f"{name}:min", val],
                    ["HMAX", rk, f"{name}:max", val]]
            last += [name, to_json(v)]
        ops.append(["EXP", rk, str(cfg.rollup_ttl_ms)])
        if last:
            ops.append(["LWW", k.dev(e.key, "last"), k.dev(e.key, "last_ts"), ts, *last])
        ops.append(["HMAX", k.dev(e.key, "meta"), "last_seen", ts])
        return ops
    if e.kind == "shadow":
        if not isinstance(body, dict) or not body:
            return []
        fields = [x for name, v in body.items() if isinstance(name, str)
                  for x in (name, to_json(v))]
        return [["LWW", k.dev(e.key, "reported"), k.dev(e.key, "reported_ts"), ts, *fields],
                ["HINCRBY", k.dev(e.key, "meta"), "version", "1"],
                ["HMAX", k.dev(e.key, "meta"), "last_seen", ts]]
    if e.kind == "command_ack":
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return []
        cid, status = body["id"], str(body.get("status", "acked"))
        return [["HSET", k.dev(e.key, "cmdstatus"), cid, status],
                ["ZREM", k.dev(e.key, "cmdq"), cid]]
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
        return [["LPUSH", k.alerts, al], ["LTRIM", k.alerts, "0", str(cfg.alerts_keep - 1)]]
    # edge_status
    return [["LWW", k.edge(e.key, "status"), k.edge(e.key, "status_ts"), ts,
             "status", to_json(body), "ts", ts]]
