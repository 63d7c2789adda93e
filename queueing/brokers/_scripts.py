"""Lua scripts of the Redis broker: each is one atomic step of a task's life."""

# KEYS: outstanding, ready, task, delayed, envs, stats [, run task, run state]
# ARGV: maxsize, id, envelope, pending marker, due (ms) or ""
#       [, run marker, pipeline, reply stream, submitted_at, ttl]
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
if ARGV[6] and ARGV[6] ~= '' then
  -- A pipeline submission: the run is a task of its own (KEYS[7]) with its state (KEYS[8]).
  redis.call('SET', KEYS[7], ARGV[6])
  redis.call('HSET', KEYS[8], 'pending', 1, 'name', ARGV[7], 'reply', ARGV[8],
             'submitted_at', ARGV[9], 'ttl', ARGV[10])
  redis.call('EXPIRE', KEYS[8], 604800)
end
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

# Ends a pipeline run whose last branch is done: assembles the results (sorted by branch
# path) into its outcome and notifies like FINISH does.
_COMPLETE = """
local function notify(run_key, task_key, prefix, run_id, outcome, ttl, reply)
  redis.call('SET', task_key, 'F' .. outcome, 'EX', ttl)
  if reply and reply ~= '' then
    local stream = '{' .. prefix .. '}:replies:' .. reply
    redis.call('XADD', stream, 'MAXLEN', '~', 10000, '*', 'id', run_id, 'o', outcome)
    redis.call('EXPIRE', stream, 86400)
  end
  redis.call('XADD', '{' .. prefix .. '}:done', 'MAXLEN', '~', 10000, '*', 'id', run_id)
  redis.call('DEL', run_key)
end

local function complete(run_key, task_key, prefix, now, run_id)
  local cur = redis.call('GET', task_key)
  if cur and string.sub(cur, 1, 1) == 'F' then
    redis.call('DEL', run_key)
    return
  end
  local fields = redis.call('HGETALL', run_key)
  local h = {}
  local keys = {}
  for i = 1, #fields, 2 do
    h[fields[i]] = fields[i + 1]
    if string.sub(fields[i], 1, 2) == 'r:' then table.insert(keys, fields[i]) end
  end
  table.sort(keys)
  local result
  if h['fanned'] == '1' then
    local parts = {}
    for _, k in ipairs(keys) do table.insert(parts, h[k]) end
    result = '[' .. table.concat(parts, ',') .. ']'
  else
    result = h['r:'] or 'null'
  end
  local outcome = '{"state":"succeeded","queue":' .. cjson.encode(h['name'] or '') ..
    ',"result":' .. result .. ',"error":null,"attempts":0,"deliveries":0,"submitted_at":' ..
    (h['submitted_at'] or '0') .. ',"finished_at":' .. now .. ',"stage":0,"fanned":' ..
    (h['fanned'] == '1' and 'true' or 'false') .. '}'
  notify(run_key, task_key, prefix, run_id, outcome, h['ttl'] or 3600, h['reply'])
end
"""

# A stage handed `children` payloads to the next stage (once per stage task, however many
# times it ran). KEYS: run state, run task. ARGV: stage task id, children, fanned "1"/"0",
# now, prefix, run id.
ADVANCE = (
    _COMPLETE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'a:' .. ARGV[1], 1) == 0 then return 0 end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'fanned', '1') end
local left = redis.call('HINCRBY', KEYS[1], 'pending', tonumber(ARGV[2]) - 1)
if left <= 0 then complete(KEYS[1], KEYS[2], ARGV[5], ARGV[4], ARGV[6]) end
return 1
"""
)

# A last-stage task succeeded. KEYS: run state, run task. ARGV: branch path, result (JSON),
# now, prefix, run id.
BRANCH = (
    _COMPLETE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'r:' .. ARGV[1], ARGV[2]) == 0 then return 0 end
local left = redis.call('HINCRBY', KEYS[1], 'pending', -1)
if left <= 0 then complete(KEYS[1], KEYS[2], ARGV[4], ARGV[3], ARGV[5]) end
return 1
"""
)

# A stage task ended without a result (first outcome wins), or the run was cancelled.
# KEYS: run state, run task. ARGV: outcome, ttl, prefix, run id.
RUN_FAIL = (
    _COMPLETE
    + """
local cur = redis.call('GET', KEYS[2])
if cur == false or string.sub(cur, 1, 1) == 'F' then
  redis.call('DEL', KEYS[1])
  return 0
end
notify(KEYS[1], KEYS[2], ARGV[3], ARGV[4], ARGV[1], ARGV[2], redis.call('HGET', KEYS[1], 'reply'))
return 1
"""
)

# Renew the leases of entries still ours; returns the ids another consumer took over (after
# this process stalled past its lease) so they are not taken back. KEYS: ready.
# ARGV: consumer, ids...
RENEW = """
local lost = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], 'workers', id, id, 1)
  if p[1] and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'workers', ARGV[1], 0, id, 'JUSTID')
  else
    table.insert(lost, id)
  end
end
return lost
"""
