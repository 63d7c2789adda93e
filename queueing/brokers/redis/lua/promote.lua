-- Move due tasks from the delayed set to the ready stream (concurrent movers are safe:
-- a task is moved by whoever removes it from the set).
-- KEYS: 1 delayed, 2 envs, 3 ready, 4 live, 5.. the record of each id
-- ARGV: 1 now (ms), 2.. the ids, one per record
-- Returns how many were moved.
local moved = 0
for i = 5, #KEYS do
  local id = ARGV[i - 3]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], id)
    local env = redis.call('HGET', KEYS[2], id)
    redis.call('HDEL', KEYS[2], id)
    if env then
      -- Moved even without a record: the reader dead-letters it with the reason.
      local entry = redis.call('XADD', KEYS[3], '*', 'id', id, 'env', env)
      local f = redis.call('HMGET', KEYS[i], 's', 'r')
      if f[1] == 'scheduled' then
        redis.call('HSET', KEYS[i], 's', 'pending', 'e', entry)
        redis.call('HSET', KEYS[4], entry, f[2] or '')
      end
      moved = moved + 1
    end
  end
end
return moved
