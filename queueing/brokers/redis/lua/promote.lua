-- Move due tasks from the delayed set to the ready stream (concurrent movers are safe:
-- a task is moved by whoever removes it from the set); on a ranked queue (see submit.lua)
-- to the `waiting` set instead, by the priority its record keeps.
-- KEYS: 1 delayed, 2 envs, 3 ready, 4 live, 5 waiting, 6 ranked, 7 nudge, 8..22 the fair
--       keys (_fair.lua), 23.. the record of each id
-- ARGV: 1 now (ms), 2 nudge tokens cap, 3.. the ids, one per record
-- Returns how many were moved.
--
-- A retry of a `retry_ahead` queue (its record has `a`, written by retry.lua) waits half a
-- level above its priority: after every higher priority, ahead of the new tasks of its
-- own, retries by the order they became due. Its first one ranks a queue that was not
-- (as a first priority does in submit.lua: a stream cannot be read out of order).
-- On a fair queue (see _fair.lua) a due task joins the back of its flow (a retry ahead:
-- the front, behind the flow's earlier ones).
local F = 8
local ranked = redis.call('EXISTS', KEYS[6]) == 1
local fair = ranked and redis.call('EXISTS', KEYS[F]) == 1
if fair then fair_load() end -- see _fair.lua

local function switch() -- as submit.lua's (see _ranking.lua)
  rank(3, 4, 2, 5, 6)
  ranked = true
end

local moved = 0
local woken = 0
for i = 23, #KEYS do
  local id = ARGV[i - 20]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], id)
    local f = redis.call('HMGET', KEYS[i], 's', 'r', 'p', 'a', 'n')
    local ahead = f[4] == '1' and f[1] == 'scheduled'
    if ahead and not ranked and redis.call('HEXISTS', KEYS[2], id) == 1 then switch() end
    if fair and f[1] == 'scheduled' and redis.call('HEXISTS', KEYS[2], id) == 1 then
      join(F, id, f[5] or '', tonumber(f[3]) or 0, ahead)
      redis.call('HSET', KEYS[i], 's', 'pending', 'e', '')
      if f[4] then redis.call('HDEL', KEYS[i], 'a') end
      moved = moved + 1
      woken = woken + 1
    elseif ranked and f[1] == 'scheduled' and redis.call('HEXISTS', KEYS[2], id) == 1 then
      local priority = tonumber(f[3]) or 0
      if ahead then priority = priority + 0.5 end
      redis.call('ZADD', KEYS[5], redis.call('INCR', KEYS[6]) - priority * LEVEL, id)
      redis.call('HSET', KEYS[i], 's', 'pending', 'e', '')
      if f[4] then redis.call('HDEL', KEYS[i], 'a') end
      moved = moved + 1
      woken = woken + 1
    else
      local env = redis.call('HGET', KEYS[2], id)
      redis.call('HDEL', KEYS[2], id)
      if env then
        -- Moved even without a record: the reader dead-letters it with the reason.
        if f[1] == 'scheduled' then
          local entry, certified = add_entry(3, id, env, f[2] or '') -- see _entry.lua
          redis.call('HSET', KEYS[i], 's', 'pending', 'e', entry)
          if not certified then redis.call('HSET', KEYS[4], entry, f[2] or '') end
        else
          redis.call('XADD', KEYS[3], '*', 'id', id, 'env', env)
        end
        moved = moved + 1
      end
    end
  end
end
if woken > 0 then
  local tokens = {}
  for t = 1, math.min(woken, tonumber(ARGV[2])) do tokens[t] = '1' end
  redis.call('LPUSH', KEYS[7], unpack(tokens))
  redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[2]) - 1)
end
return moved
