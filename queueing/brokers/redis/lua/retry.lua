-- Release a task that failed an attempt and schedule it again: it stays outstanding.
-- KEYS: 1 record, 2 ready, 3 delayed, 4 envs, 5 stats, 6 live, 7..21 the fair keys
--       (_fair.lua: a task counted as running of its tenant is not any more)
-- ARGV: 1 the entry it was claimed from, 2 task id, 3 envelope, 4 meta, 5 due (ms),
--       6 '1' if its queue has `retry_ahead` (promote.lua then puts it ahead of the new
--       tasks of its priority), else '', 7 nudge tokens cap
-- Returns 1 scheduled; 0 it had an outcome (or no such task); -2 the record names
-- another entry (the one given is acknowledged and removed; the task is left alone)
local GROUP = 'workers'
local entry = ARGV[1]
local f = redis.call('HMGET', KEYS[1], 's', 'e', 'n', 'c')
local function drop()
  if entry ~= '' then
    redis.call('XACK', KEYS[2], GROUP, entry)
    redis.call('XDEL', KEYS[2], entry)
  end
end
if not f[1] or (f[1] ~= 'pending' and f[1] ~= 'scheduled') then
  drop()
  return 0
end
if f[2] ~= entry then
  drop()
  return -2
end
drop()
redis.call('HDEL', KEYS[6], entry)
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
redis.call('HSET', KEYS[1], 's', 'scheduled', 'e', '', 'm', ARGV[4])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'a', '1') end
if f[4] then
  redis.call('HDEL', KEYS[1], 'c')
  fair_load() -- see _fair.lua
  unrun(7, f[3] or '', tonumber(ARGV[7]))
end
redis.call('HINCRBY', KEYS[5], 'retried', 1)
return 1
