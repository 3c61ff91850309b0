"""Commands to devices through the edge that holds them (at least once, with expiry).

A command is stored per device (``cmds`` hash: id -> JSON record, ``cmdstatus``: id ->
``pending`` | ``sent:EDGE`` | ``expired`` | the device's ack status, ``cmdq`` zset: id ->
expiry in Unix ms).  It is pushed to the downlink stream ``er:{edge:ID}:down`` of the
edge where the device is online, at once if it is, else when its ``session`` entry
says it came online (the worker calls :func:`deliver_pending`).  Unacknowledged commands
are pushed again each time the device comes online, so devices must deduplicate by
command id.  A ``command_ack`` entry from the device ends the command; past its expiry
an unacknowledged command is marked ``expired`` and not sent again.  Finished commands
(acked or expired) go to the ``cmddone`` zset; only the newest ``commands_keep`` of
them keep their records (the apply script's ``KEEP`` op and :data:`_EXPIRE`), so a
device's command hashes do not grow without bound.

Downlink stream entry fields: ``t`` = ``command``, ``device``, ``id``, ``body`` (JSON),
``expires`` (Unix ms).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from origin.effects import to_json
from origin.keys import ShardKeys, downlink_key, edge_info
from origin.settings import OriginSettings

__all__ = ["enqueue_command", "deliver_pending", "device_location", "command_states",
           "commands_from"]

_SET_IF_OPEN = """
local s = redis.call('HGET', KEYS[1], ARGV[1])
if s == 'pending' or (s and string.sub(s, 1, 5) == 'sent:') then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

# Expire one command: mark it (if still open), move it to the finished set and keep only
# the newest ARGV[3] finished commands (their records and statuses are deleted).
# KEYS: cmdstatus, cmdq, cmddone, cmds; ARGV: id, now_ms, keep.
_EXPIRE = """
local s = redis.call('HGET', KEYS[1], ARGV[1])
if s == 'pending' or (s and string.sub(s, 1, 5) == 'sent:') then
  redis.call('HSET', KEYS[1], ARGV[1], 'expired')
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local n = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[3])
if n > 0 then
  local ids = redis.call('ZRANGE', KEYS[3], 0, n - 1)
  redis.call('HDEL', KEYS[4], unpack(ids))
  redis.call('HDEL', KEYS[1], unpack(ids))
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, n - 1)
end
return 1
"""


async def _set_if_open(r: aioredis.Redis, status_key: str, cid: str, status: str) -> int:
    res: Any = await r.eval(_SET_IF_OPEN, 1, status_key, cid, status)
    return int(res)


async def device_location(r: aioredis.Redis, s: OriginSettings, device: str) -> str | None:
    """Edge id where ``device`` is online (its last session entry says so and that edge
    has a live registry entry), else None."""
    k = ShardKeys.of(device, s.shards)
    state: Any = await r.hmget(k.sess(device, "state"), ["online", "edge"])
    if state[0] != b"1" or not state[1]:
        return None
    edge = state[1].decode()
    return edge if await r.exists(edge_info(edge)) else None


async def enqueue_command(r: aioredis.Redis, s: OriginSettings, device: str, body: Any,
                          ttl: float | None = None) -> dict[str, Any]:
    """Store a command for ``device`` and push it if the device is online.
    Returns the command record with its ``status``."""
    now = time.time_ns() // 1_000_000
    k = ShardKeys.of(device, s.shards)
    cid = uuid.uuid4().hex
    expires = now + int((s.command_ttl if ttl is None else ttl) * 1000)
    rec = {"id": cid, "device": device, "body": body, "created": now, "expires": expires}
    pipe = r.pipeline(transaction=True)
    pipe.hset(k.dev(device, "cmds"), cid, to_json(rec))
    pipe.hset(k.dev(device, "cmdstatus"), cid, "pending")
    pipe.zadd(k.dev(device, "cmdq"), {cid: expires})
    await pipe.execute()
    await deliver_pending(r, s, device)
    st: Any = await r.hget(k.dev(device, "cmdstatus"), cid)
    return {**rec, "status": st.decode() if st else "pending"}


async def deliver_pending(r: aioredis.Redis, s: OriginSettings, device: str,
                          edge: str | None = None) -> int:
    """Expire overdue commands, then push every open one to ``edge`` (default: where the
    device is online).  Returns the number pushed (0 if the device is offline)."""
    now = time.time_ns() // 1_000_000
    k = ShardKeys.of(device, s.shards)
    status_key, q = k.dev(device, "cmdstatus"), k.dev(device, "cmdq")
    overdue: Any = await r.zrangebyscore(q, "-inf", now)
    for cid in overdue:
        await r.eval(_EXPIRE, 4, status_key, q, k.dev(device, "cmddone"),
                     k.dev(device, "cmds"), cid.decode(), str(now), str(s.commands_keep))
    edge = edge or await device_location(r, s, device)
    if edge is None:
        return 0
    due: Any = await r.zrangebyscore(q, now, "+inf")
    sent = 0
    for raw in due:
        cid = raw.decode()
        rec_raw: Any = await r.hget(k.dev(device, "cmds"), cid)
        if rec_raw is None:
            continue
        rec = json.loads(rec_raw)
        fields: Any = {"t": "command", "device": device, "id": cid,
                       "body": to_json(rec.get("body")), "expires": str(rec.get("expires"))}
        await r.xadd(downlink_key(edge), fields, maxlen=s.downlink_maxlen, approximate=True)
        await _set_if_open(r, status_key, cid, f"sent:{edge}")
        sent += 1
    return sent


async def command_states(r: aioredis.Redis, s: OriginSettings, device: str,
                         limit: int = 50) -> list[dict[str, Any]]:
    """The device's commands (newest first, at most ``limit``) with their status."""
    k = ShardKeys.of(device, s.shards)
    async with r.pipeline(transaction=True) as p:
        p.hgetall(k.dev(device, "cmds"))
        p.hgetall(k.dev(device, "cmdstatus"))
        recs, states = await p.execute()
    return commands_from(recs, states, limit)


def commands_from(recs: dict[bytes, bytes], states: dict[bytes, bytes],
                  limit: int = 50) -> list[dict[str, Any]]:
    """The command list of :func:`command_states` from the device's ``cmds`` and
    ``cmdstatus`` hashes (read together, in one transaction, so a status matches its
    record); a pending or sent command past its expiry reads ``expired``."""
    now = time.time_ns() // 1_000_000
    out = []
    for cid, raw in recs.items():
        rec = json.loads(raw)
        st = (states.get(cid) or b"pending").decode()
        if (st == "pending" or st.startswith("sent:")) and rec.get("expires", 0) < now:
            st = "expired"
        out.append({**rec, "status": st})
    out.sort(key=lambda x: x.get("created", 0), reverse=True)
    return out[:limit]
