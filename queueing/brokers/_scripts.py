"""Lua scripts of the Redis broker: each is one atomic step of a task's life."""

# KEYS: outstanding, ready, task, delayed, envs, stats
# ARGV: maxsize, id, envelope, pending marker, due (ms) or ""
SUBMIT = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('INCR', KEYS[1])
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[3], ARGV[4])
  redis.call('HSET', KEYS[5], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2])
else
  local entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'env', ARGV[3])
  -- The entry id rides along so a cancel can delete a task that has not started.
  redis.call('SET', KEYS[3], ARGV[4] .. '\\n' .. entry)
end
redis.call('HINCRBY', KEYS[6], 'submitted', 1)
return 1
"""

# First outcome wins (a cancel passes no entry). KEYS: task, ready, outstanding, stats,
# replies, done, room, dead, delayed, envs. ARGV: outcome, ttl, entry or "", counter, id,
# dead letter or "", dead maxlen, reply "1"/"0".
FINISH = """
local cur = redis.call('GET', KEYS[1])
if ARGV[3] ~= '' then
  redis.call('XACK', KEYS[2], 'workers', ARGV[3])
  redis.call('XDEL', KEYS[2], ARGV[3])
end
if cur and string.sub(cur, 1, 1) == 'F' then return 0 end
redis.call('SET', KEYS[1], 'F' .. ARGV[1], 'EX', ARGV[2])
if ARGV[3] == '' and cur then
  -- A cancel: delete the queued entry (it will never be delivered).
  local nl = string.find(cur, '\\n', 1, true)
  if nl then redis.call('XDEL', KEYS[2], string.sub(cur, nl + 1)) end
end
if cur then
  if redis.call('DECR', KEYS[3]) < 0 then redis.call('SET', KEYS[3], 0) end
end
redis.call('ZREM', KEYS[9], ARGV[5])
redis.call('HDEL', KEYS[10], ARGV[5])
redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
if ARGV[8] == '1' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'id', ARGV[5], 'o', ARGV[1])
  redis.call('EXPIRE', KEYS[5], 86400)
end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', 10000, '*', 'id', ARGV[5])
redis.call('LPUSH', KEYS[7], 1)
redis.call('LTRIM', KEYS[7], 0, 63)
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[7], '*', 'id', ARGV[5], 'd', ARGV[6])
end
return 1
"""

# KEYS: ready, delayed, envs, stats, task. ARGV: entry or "", id, envelope, due (ms)
RETRY = """
if ARGV[1] ~= '' then
  redis.call('XACK', KEYS[1], 'workers', ARGV[1])
  redis.call('XDEL', KEYS[1], ARGV[1])
end
local cur = redis.call('GET', KEYS[5])
if cur and string.sub(cur, 1, 1) == 'F' then return 0 end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('HINCRBY', KEYS[4], 'retried', 1)
return 1
"""

# KEYS: delayed, envs, ready. ARGV: now (ms), limit. Returns {moved, next due or ""}.
PROMOTE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  local env = redis.call('HGET', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if env then redis.call('XADD', KEYS[3], '*', 'id', id, 'env', env) end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#ids, nxt[2] or ''}
"""

# An entry that is not a task. KEYS: ready, dead. ARGV: entry, dead letter, maxlen
REJECT_ENTRY = """
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'id', '', 'd', ARGV[2])
redis.call('XACK', KEYS[1], 'workers', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""
