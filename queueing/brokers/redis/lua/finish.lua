-- Record a task's outcome and release it: the first outcome wins.
-- KEYS: 1 record, 2 ready, 3 outstanding, 4 stats, 5 room, 6 done, 7 dead, 8 delayed,
--       9 envs, 10 live [, 11 the replies stream of the submitting client]
-- ARGV: 1 the entry it was claimed from ('' for a cancel: whatever entry or delay the
--       record names), 2 state, 3 outcome, 4 ttl (ms), 5 task id, 6 stats counter,
--       7 dead letter or '', 8 dead letters cap, 9 done cap, 10 replies cap,
--       11 replies ttl (s), 12 room tokens, 13 the submitting client KEYS[11] belongs to,
--       14 the longest outcome a notice carries
-- Returns 1 recorded; 0 it had an outcome; -1 no such task; -2 the record names another
-- entry (the one given is acknowledged and removed; the task is left alone)
local GROUP = 'workers'
local entry = ARGV[1]
local f = redis.call('HMGET', KEYS[1], 's', 'e', 'r')
local function drop()
  if entry ~= '' then
    redis.call('XACK', KEYS[2], GROUP, entry)
    redis.call('XDEL', KEYS[2], entry)
  end
end
if not f[1] then
  drop()
  return -1
end
if f[1] ~= 'pending' and f[1] ~= 'scheduled' then
  drop()
  return 0
end
if entry ~= '' and f[2] ~= entry then
  drop()
  return -2
end
if f[2] and f[2] ~= '' then
  redis.call('XACK', KEYS[2], GROUP, f[2])
  redis.call('XDEL', KEYS[2], f[2])
  redis.call('HDEL', KEYS[10], f[2])
end
if f[1] == 'scheduled' then
  redis.call('ZREM', KEYS[8], ARGV[5])
  redis.call('HDEL', KEYS[9], ARGV[5])
end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'e', '', 'o', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('DECR', KEYS[3]) < 0 then redis.call('SET', KEYS[3], 0) end
redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
redis.call('LPUSH', KEYS[5], 1)
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[12]) - 1)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[9], '*', 'id', ARGV[5])
if KEYS[11] and f[3] == ARGV[13] then
  -- The outcome rides along (a copy: the record keeps it), unless it is big.
  if #ARGV[3] <= tonumber(ARGV[14]) then
    redis.call('XADD', KEYS[11], 'MAXLEN', '~', ARGV[10], '*', 'id', ARGV[5], 'o', ARGV[3])
  else
    redis.call('XADD', KEYS[11], 'MAXLEN', '~', ARGV[10], '*', 'id', ARGV[5])
  end
  redis.call('EXPIRE', KEYS[11], ARGV[11])
end
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[8], '*', 'id', ARGV[5], 'd', ARGV[7])
end
return 1
