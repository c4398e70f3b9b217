"""The Lua scripts of the cluster mode: each runs atomically inside Redis.

Every script touches keys under one hash tag only, so it also runs on a Redis Cluster.
Times come from Redis's own clock (``TIME``): workers never compare wall clocks.
"""

from __future__ import annotations

from typing import Final


_NOW: Final = (
    "local t = redis.call('time') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    # Microseconds order the dedupe sets: trimming by rank then drops the oldest first.
    "local nowus = t[1] * 1000000 + t[2]\n"
)

#: KEYS: members, epoch. ARGV: worker id, membership ttl (ms), "join" | "beat" | "leave".
#: Returns {epoch, member, member, ...} (the live members after this call).
MEMBERSHIP: Final = (
    _NOW
    + """
if ARGV[3] == 'leave' then
  if redis.call('zrem', KEYS[1], ARGV[1]) == 1 then redis.call('incr', KEYS[2]) end
else
  local added = redis.call('zadd', KEYS[1], now, ARGV[1])
  if added == 1 then redis.call('incr', KEYS[2]) end
end
local gone = redis.call('zremrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if gone > 0 then redis.call('incr', KEYS[2]) end
local out = {tostring(redis.call('get', KEYS[2]) or '0')}
for _, m in ipairs(redis.call('zrange', KEYS[1], 0, -1)) do out[#out + 1] = m end
return out
"""
)

#: KEYS: lease 1, fence 1, lease 2, fence 2, ..., stats. ARGV: worker id, lease ttl (ms).
#: Takes each free lease with the next fencing number of its visitor. Returns one item
#: per visitor: the lease token ``<worker>|<fence>``, or "" when someone holds the lease.
CLAIM: Final = """
local out = {}
local taken = 0
for i = 1, (#KEYS - 1) / 2 do
  local lease, fence = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('exists', lease) == 1 then
    out[i] = ''
  else
    local token = ARGV[1] .. '|' .. redis.call('incr', fence)
    redis.call('set', lease, token, 'PX', ARGV[2])
    out[i] = token
    taken = taken + 1
  end
end
if taken > 0 then redis.call('hincrby', KEYS[#KEYS], 'leases_taken', taken) end
return out
"""

#: KEYS: leases. ARGV: ttl (ms), then one token per lease. Returns 1/0 per lease.
RENEW: Final = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[i + 1] then
    redis.call('pexpire', key, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

#: KEYS: lease, epoch, stats. ARGV: token, stats field. Returns 1 if it was ours.
RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('incr', KEYS[2])
  if ARGV[2] ~= '' then redis.call('hincrby', KEYS[3], ARGV[2], 1) end
  return 1
end
return 0
"""

#: KEYS: lease, dedupe, stream, cursors, stats.
#: ARGV: token, message id, dedupe window (ms), dedupe max size, chat id, visitor key,
#:       message JSON, stream max length.
#: Returns -1 (fenced: the token is not the lease's), 0 (already published), 1 (published).
PUBLISH: Final = (
    _NOW
    + """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  redis.call('hincrby', KEYS[5], 'fenced', 1)
  return -1
end
redis.call('zremrangebyscore', KEYS[2], '-inf', nowus - tonumber(ARGV[3]) * 1000)
if redis.call('zscore', KEYS[2], ARGV[2]) then
  redis.call('hset', KEYS[4], ARGV[5], ARGV[2])
  redis.call('hincrby', KEYS[5], 'duplicates', 1)
  return 0
end
redis.call('zadd', KEYS[2], nowus, ARGV[2])
local size = redis.call('zcard', KEYS[2])
if size > tonumber(ARGV[4]) then
  redis.call('zremrangebyrank', KEYS[2], 0, size - tonumber(ARGV[4]) - 1)
end
redis.call('xadd', KEYS[3], '*', 'key', ARGV[6], 'chat', ARGV[5], 'id', ARGV[2], 'm', ARGV[7])
redis.call('hset', KEYS[4], ARGV[5], ARGV[2])
redis.call('hincrby', KEYS[5], 'published', 1)
return 1
"""
)

#: KEYS: stream, acked, stats. ARGV: group, entry id, consumer, message id,
#:       window (ms), max size.
#: Returns 1 (acknowledged now), 0 (the message was acknowledged before), -1 (the entry is
#: no longer pending for this consumer: another worker claimed it).
ACK: Final = (
    _NOW
    + """
local pending = redis.call('xpending', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if #pending == 0 then
  redis.call('hincrby', KEYS[3], 'ack_refused', 1)
  return -1
end
redis.call('xack', KEYS[1], ARGV[1], ARGV[2])
redis.call('zremrangebyscore', KEYS[2], '-inf', nowus - tonumber(ARGV[5]) * 1000)
if redis.call('zscore', KEYS[2], ARGV[4]) then
  redis.call('hincrby', KEYS[3], 'ack_duplicates', 1)
  return 0
end
redis.call('zadd', KEYS[2], nowus, ARGV[4])
local size = redis.call('zcard', KEYS[2])
if size > tonumber(ARGV[6]) then
  redis.call('zremrangebyrank', KEYS[2], 0, size - tonumber(ARGV[6]) - 1)
end
redis.call('hincrby', KEYS[3], 'acked', 1)
return 1
"""
)

#: KEYS: active, epoch. ARGV: visitor key. Marks the key active now; returns 1.
ACTIVATE: Final = (
    _NOW
    + """
redis.call('zadd', KEYS[1], now, ARGV[1])
redis.call('incr', KEYS[2])
return 1
"""
)

#: KEYS: lease, active, epoch, cursors. ARGV: token, visitor key, idle (ms).
#: Ends the key's activity if we hold its lease and it was idle long enough: returns 1.
DEACTIVATE: Final = (
    _NOW
    + """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return -1 end
local score = redis.call('zscore', KEYS[2], ARGV[2])
if score and tonumber(score) > now - tonumber(ARGV[3]) then return 0 end
redis.call('zrem', KEYS[2], ARGV[2])
redis.call('del', KEYS[1], KEYS[4])
redis.call('incr', KEYS[3])
return 1
"""
)

#: KEYS: stream. ARGV: group, consumer, idle (ms), entry ids...
#: Marks entries pending here as idle long enough for any worker to claim them now.
GIVE_BACK: Final = """
for i = 4, #ARGV do
  redis.call('xclaim', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
end
return #ARGV - 3
"""
