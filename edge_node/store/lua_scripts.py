"""Lua scripts run inside Redis.  Each touches the keys of one room only (one
Cluster slot), so they stay valid on Redis Cluster.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "RENEW", "RELEASE", "APPEND", "STEAL", "HANDOVER", "EPOCH_FLOOR",
           "SNAPSHOT", "DROP_SNAPSHOT", "DROP_MEMBER"]

#: KEYS: owner, epoch; ARGV: edge_id, lease_ms.  Returns ``{1, token}`` when the
#: lease was free and is now ours (new epoch), else ``{0, current_token}``.
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local e = redis.call('INCR', KEYS[2])
local tok = ARGV[1] .. ':' .. e
redis.call('SET', KEYS[1], tok, 'PX', ARGV[2])
return {1, tok}
"""

#: KEYS: owner, epoch; ARGV: token, lease_ms.  1 when renewed, 2 when reclaimed, 0
#: when the lease is not ours.  Reclaim: a lease that lapsed while this edge could not
#: reach Redis (outage, partition) is taken back *with the same epoch* if nobody took
#: the room meanwhile (the epoch counter still names our epoch), so the messages the
#: edge kept serving during the outage stay contiguous and become durable as they are.
RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not cur then
  local e = string.match(ARGV[1], ':(%d+)$')
  if e and redis.call('GET', KEYS[2]) == e then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 2
  end
end
return 0
"""

#: KEYS: owner; ARGV: token.  Deletes the lease only if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS: owner, log; ARGV: token, maxlen, epoch1, seq1, data1, epoch2, ...
#: Fencing: a writer whose lease token is not the current one is refused, so
#: a stale owner that wakes up (SIGSTOP, GC pause, partition) cannot write
#: under its old epoch.  Idempotent: entries at or below the stream's last id
#: (a retry after a lost reply) are skipped.  Contiguous: within an epoch the
#: next entry must be last + 1 (else error GAP: an earlier batch is missing).
#: Returns the number appended.
APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED') end
local le, ls = -1, -1
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
  local id = last[1][1]
  local dash = string.find(id, '-', 1, true)
  le = tonumber(string.sub(id, 1, dash - 1))
  ls = tonumber(string.sub(id, dash + 1))
end
local n = 0
for i = 3, #ARGV, 3 do
  local e = tonumber(ARGV[i])
  local s = tonumber(ARGV[i + 1])
  if e == le and s > ls + 1 then
    -- An earlier batch of this epoch is missing (refused, not yet retried):
    -- refuse this one too, so nothing is ever acknowledged out of order.
    return redis.error_reply('GAP ' .. le .. '-' .. ls)
  end
  if e > le or (e == le and s > ls) then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], ARGV[i] .. '-' .. ARGV[i + 1],
               'd', ARGV[i + 2])
    le, ls = e, s
    n = n + 1
  end
end
return n
"""

#: KEYS: owner; ARGV: dead edge id.  Deletes the lease if that edge holds it
#: (found dead by a probe), so a live edge can take the room at once.
STEAL = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS: owner; ARGV: token, target edge id, lease_ms.  Gives a lease we hold
#: to another edge with the SAME epoch (a planned handover: nothing is lost,
#: positions continue).  Returns the new token, or nil if the lease is not ours.
HANDOVER = """
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return false end
local colon = string.find(cur, ':[^:]*$')
local tok = ARGV[2] .. string.sub(cur, colon)
redis.call('SET', KEYS[1], tok, 'PX', ARGV[3])
return tok
"""

#: KEYS: epoch; ARGV: floor.  Raises the epoch counter to at least ``floor`` (after a
#: failover lost entries of epoch ``floor``: the next ACQUIRE must not reissue it).
EPOCH_FLOOR = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

#: KEYS: owner, log, snap; ARGV: token, pos_epoch, pos_seq, data, ttl_ms.  Stores a
#: game-room snapshot covering the stream up to ``pos``.  Fenced like APPEND (but 0, not
#: an error, when the lease is not ours), and refused (0) until the stream's last entry
#: is at or past ``pos`` (an empty stream holds only ``0-0``), so a snapshot never covers
#: inputs that are not durable.  Then: HSET pos/data, PEXPIRE, and the stream is trimmed
#: behind the previous snapshot's position (behind ``pos`` if that is older: entries a
#: replay from this snapshot needs are never removed).  Returns 1 when stored.
SNAPSHOT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local pe, ps = tonumber(ARGV[2]), tonumber(ARGV[3])
if pe ~= 0 or ps ~= 0 then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last == 0 then return 0 end
  local id = last[1][1]
  local dash = string.find(id, '-', 1, true)
  local le = tonumber(string.sub(id, 1, dash - 1))
  local ls = tonumber(string.sub(id, dash + 1))
  if le < pe or (le == pe and ls < ps) then return 0 end
end
local prev = redis.call('HGET', KEYS[3], 'pos')
if prev then
  local dash = string.find(prev, '-', 1, true)
  local ve = tonumber(string.sub(prev, 1, dash - 1))
  local vs = tonumber(string.sub(prev, dash + 1))
  if pe < ve or (pe == ve and ps < vs) then return 0 end
end
redis.call('HSET', KEYS[3], 'pos', ARGV[2] .. '-' .. ARGV[3], 'data', ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
if prev then redis.call('XTRIM', KEYS[2], 'MINID', prev) end
return 1
"""

#: KEYS: owner, snap; ARGV: token.  Deletes the snapshot only while the lease is ours.
DROP_SNAPSHOT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[2]) end
return 0
"""

#: KEYS: members; ARGV: session_id, edge_id.  Forgets the member only if this edge
#: recorded it: a session that resumed elsewhere keeps the entry its new edge wrote.
DROP_MEMBER = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and cmsgpack.unpack(v)[4] == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""
