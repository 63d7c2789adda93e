-- Claim the next tasks of a ranked queue (see submit.lua): move those of the given ids
-- still waiting into the ready stream, then read as many new entries for the consumer
-- (concurrent claims are safe: a task is moved by whoever removes it from `waiting`).
-- KEYS: 1 ready, 2 live, 3 waiting, 4 envs, 5.. the record of each id
-- ARGV: 1 consumer, 2.. the ids, one per record (claim.lua's, highest priority first)
-- Returns what claim.lua returns for entries read.
local GROUP = 'workers'
local moved = 0
for i = 5, #KEYS do
  local id = ARGV[i - 3]
  if redis.call('ZREM', KEYS[3], id) == 1 then
    local env = redis.call('HGET', KEYS[4], id)
    redis.call('HDEL', KEYS[4], id)
    if env then
      local entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'env', env)
      local f = redis.call('HMGET', KEYS[i], 's', 'r')
      if f[1] == 'pending' then
        redis.call('HSET', KEYS[i], 'e', entry)
        redis.call('HSET', KEYS[2], entry, f[2] or '')
      end
      moved = moved + 1
    end
  end
end
if moved == 0 then return {} end
local got = redis.call('XREADGROUP', 'GROUP', GROUP, ARGV[1], 'COUNT', moved, 'STREAMS',
  KEYS[1], '>')
if not got then return {} end
local out = {}
for _, e in ipairs(got[1][2]) do
  if e[2][1] == 'wake' then -- a wake-up entry (see claim.lua)
    redis.call('XACK', KEYS[1], GROUP, e[1])
    redis.call('XDEL', KEYS[1], e[1])
  else
    out[#out + 1] = {e[1], e[2], owner_of(e[1], e[2], redis.call('HGET', KEYS[2], e[1]))}
  end
end
return out
