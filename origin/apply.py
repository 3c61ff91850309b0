"""Idempotent, atomic apply of one uplink batch: one Lua call per stream entry.

The script, for each entry of the batch: test-and-set the entry's bit in the edge's
idempotency bitmap (``SETBIT`` returns the old bit), run the entry's ops only if the
bit was clear, count applied/duplicate entries and lag buckets in the shard's stats
hash, and finally ``XACK`` the stream entry, all in one atomic step.  The lag of an
applied entry is Redis's clock (``TIME``) when the script runs minus the edge's submit
time: edge submit -> applied at the origin, including the wait in the stream and the
apply itself (bucketed like :func:`origin.effects.lag_bucket`).  So a batch is
applied exactly once in effect: a re-delivered stream entry (claimed after a worker
crash) and a re-sent batch (uplink retry) both find their bits set.

Bitmaps: ``er:{up:N}:seen:EDGE:CHUNK`` with ``CHUNK = seq // 2**20`` (128 KiB each),
expiring ``seen_ttl_ms`` after the last write: the deduplication window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import redis.asyncio as aioredis

from edge_node.contract import WireError, unpack_batch
from origin.effects import EffectSettings, compile_entry, to_json
from origin.hooks.record import attach_hook, hook_op
from origin.keys import GROUP, ShardKeys

__all__ = ["APPLY_LUA", "Applier", "Prepared"]

APPLY_LUA = r"""
local ops_all = cmsgpack.unpack(ARGV[4])
local expired = {}
local run
function run(op)
  local c = op[1]
  if c == 'LWW' then
    -- One HMGET of the stored timestamps, then one HSET per hash for the fields
    -- whose stored timestamp is not newer (same result as field by field).
    local ts = tonumber(op[4])
    local names = {}
    for i = 5, #op, 2 do names[#names + 1] = op[i] end
    local curs = redis.call('HMGET', op[3], unpack(names))
    local data, stamps = {}, {}
    for j = 1, #names do
      local cur = curs[j]
      if (not cur) or tonumber(cur) <= ts then
        data[#data + 1] = names[j]
        data[#data + 1] = op[4 + 2 * j]
        stamps[#stamps + 1] = names[j]
        stamps[#stamps + 1] = op[4]
      end
    end
    if #data > 0 then
      redis.call('HSET', op[2], unpack(data))
      redis.call('HSET', op[3], unpack(stamps))
    end
  elseif c == 'ROLL' then
    -- op = {'ROLL', key, name, count, sum, min, max, ...}: NAME:count and NAME:sum
    -- add up, NAME:min/NAME:max keep the extremes; one HMGET and one HSET in all.
    local fields = {}
    for i = 3, #op, 5 do
      local n = op[i]
      fields[#fields + 1] = n .. ':count'
      fields[#fields + 1] = n .. ':sum'
      fields[#fields + 1] = n .. ':min'
      fields[#fields + 1] = n .. ':max'
    end
    local cur = redis.call('HMGET', op[2], unpack(fields))
    local out = {}
    local k = 0
    for i = 3, #op, 5 do
      out[#out + 1] = fields[k + 1]
      out[#out + 1] = string.format('%.17g', (tonumber(cur[k + 1]) or 0) + tonumber(op[i + 1]))
      out[#out + 1] = fields[k + 2]
      out[#out + 1] = string.format('%.17g', (tonumber(cur[k + 2]) or 0) + tonumber(op[i + 2]))
      local mn, mx = tonumber(cur[k + 3]), tonumber(cur[k + 4])
      if (not mn) or tonumber(op[i + 3]) < mn then
        out[#out + 1] = fields[k + 3]
        out[#out + 1] = op[i + 3]
      end
      if (not mx) or tonumber(op[i + 4]) > mx then
        out[#out + 1] = fields[k + 4]
        out[#out + 1] = op[i + 4]
      end
      k = k + 4
    end
    redis.call('HSET', op[2], unpack(out))
  elseif c == 'HMIN' or c == 'HMAX' then
    local cur = redis.call('HGET', op[2], op[3])
    local v = tonumber(op[4])
    if (not cur) or (c == 'HMIN' and v < tonumber(cur)) or (c == 'HMAX' and v > tonumber(cur)) then
      redis.call('HSET', op[2], op[3], op[4])
    end
  elseif c == 'ONCE' then
    -- op = {'ONCE', set_key, member, ttl_ms, dup_counter, sub_op, ...}: the sub-ops run
    -- only the first time member is added (a telemetry piece counted once across edges);
    -- a repeat counts in the stats hash field dup_counter.
    if redis.call('SADD', op[2], op[3]) == 1 then
      if not expired[op[2]] then
        redis.call('PEXPIRE', op[2], op[4])
        expired[op[2]] = true
      end
      for i = 6, #op do run(op[i]) end
    else
      redis.call('HINCRBY', KEYS[2], op[5], 1)
    end
  elseif c == 'KEEP' then
    -- op = {'KEEP', done_zset, keep, hash1, hash2, ...}: drop the oldest finished ids
    -- beyond keep from the zset and from each hash.
    local n = redis.call('ZCARD', op[2]) - tonumber(op[3])
    if n > 0 then
      local ids = redis.call('ZRANGE', op[2], 0, n - 1)
      for i = 4, #op do redis.call('HDEL', op[i], unpack(ids)) end
      redis.call('ZREMRANGEBYRANK', op[2], 0, n - 1)
    end
  elseif c == 'EXP' then
    if not expired[op[2]] then
      redis.call('PEXPIRE', op[2], op[3])
      expired[op[2]] = true
    end
  else
    redis.call(unpack(op))
  end
end
local applied, dups, dead = 0, 0, 0
local lags, kinds = {}, {}
-- Lag = Redis clock at apply - the edge's submit time (ms), in 10 %-wide buckets.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local log_base = math.log(1.1)
for _, e in ipairs(ops_all) do
  local seq = e[1]
  local chunk = math.floor(seq / 1048576)
  local sk = KEYS[3] .. string.format('%.0f', chunk)
  if seq < 0 then
    dead = dead + 1
    redis.call('LPUSH', KEYS[4], e[5])
    redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
  elseif redis.call('SETBIT', sk, seq - chunk * 1048576, 1) == 0 then
    if not expired[sk] then
      redis.call('PEXPIRE', sk, ARGV[3])
      expired[sk] = true
    end
    local ops = e[4]
    if #ops == 0 then
      dead = dead + 1
      redis.call('LPUSH', KEYS[4], e[5])
      redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
    else
      for _, op in ipairs(ops) do run(op) end
      applied = applied + 1
      local b = math.floor(math.log(math.max(now_ms - e[2], 0) + 1) / log_base)
      lags[b] = (lags[b] or 0) + 1
      kinds[e[3]] = (kinds[e[3]] or 0) + 1
    end
  else
    dups = dups + 1
  end
end
if applied > 0 then redis.call('HINCRBY', KEYS[2], 'applied', applied) end
if dups > 0 then redis.call('HINCRBY', KEYS[2], 'duplicates', dups) end
if dead > 0 then redis.call('HINCRBY', KEYS[2], 'dead', dead) end
for b, n in pairs(lags) do redis.call('HINCRBY', KEYS[2], 'lag:' .. b, n) end
for k, n in pairs(kinds) do redis.call('HINCRBY', KEYS[2], 'k:' .. k, n) end
if ARGV[2] ~= '' then redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) end
return {applied, dups, dead}
"""


@dataclass(frozen=True, slots=True)
class Prepared:
    """One stream entry ready for the script: its keys, args and post-apply actions."""

    keys: list[str]
    args: list[Any]
    entries: int
    online_devices: list[tuple[str, str]]  # (device, edge) whose session went online


class Applier:
    """Prepares and applies batches of one origin (shared by all shards).

    ``hook_kinds``: entries of these kinds (``*``: all) are also queued, by the same
    script call, on the shard's hooks stream (capped near ``hooks_maxlen``) for origin
    functions and webhooks (:mod:`origin.hooks.record`)."""

    def __init__(self, cfg: EffectSettings, seen_ttl_ms: int = 24 * 3600 * 1000,
                 hook_kinds: frozenset[str] = frozenset(), hooks_maxlen: int = 100_000
                 ) -> None:
        self.cfg = cfg
        self.seen_ttl_ms = seen_ttl_ms
        self.hook_kinds = hook_kinds
        self.hook_all = "*" in hook_kinds
        self.hooks_maxlen = hooks_maxlen
        self.sha = ""

    async def load(self, r: aioredis.Redis) -> None:
        """SCRIPT LOAD the apply script (again after a Redis restart: NOSCRIPT)."""
        self.sha = str(await r.script_load(APPLY_LUA))

    def prepare(self, shard: int, stream_id: str, fields: dict[bytes, bytes]) -> Prepared:
        """Compile one stream entry; an undecodable batch becomes one dead letter (acked).
        Each entry goes to the script as ``[seq, ts_ms, kind, ops, dead_letter]``."""
        k = ShardKeys(shard)
        online: list[tuple[str, str]] = []
        try:
            edge, entries = unpack_batch(fields)
        except WireError as exc:
            edge = (fields.get(b"e") or b"?").decode(errors="replace")
            # Seq -1 cannot collide with real ids (they are >= 0).
            raw = [[-1, 0, "?", [], to_json({"error": str(exc), "stream_id": stream_id})]]
            return Prepared(self._keys(k, edge), self._args(stream_id, raw), 0, [])
        out: list[list[Any]] = []
        for e in entries:
            ops = compile_entry(k, edge, e, self.cfg)
            if ops and (self.hook_all or e.kind in self.hook_kinds):
                attach_hook(ops, hook_op(shard, self.hooks_maxlen, edge, e))
            dead = "" if ops else to_json({"edge": edge, "seq": e.seq, "kind": e.kind,
                                           "key": e.key, "body": e.body})
            out.append([e.seq, e.ts_ms, e.kind, ops, dead])
            if ops and e.kind == "session" and isinstance(e.body, dict) \
                    and e.body.get("online", True):
                online.append((e.key, str(e.body.get("edge") or edge)))
        return Prepared(self._keys(k, edge), self._args(stream_id, out), len(entries), online)

    def _keys(self, k: ShardKeys, edge: str) -> list[str]:
        return [k.stream, k.stats, k.seen_prefix(edge), k.dead]

    def _args(self, stream_id: str, out: list[Any]) -> list[Any]:
        return [GROUP, stream_id, str(self.seen_ttl_ms),
                msgpack.packb(out, use_bin_type=False), str(self.cfg.dead_keep)]
