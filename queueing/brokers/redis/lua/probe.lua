-- Whether a queue (a shard of one) has tasks to claim, without claiming any: entries of
-- its ready stream that no consumer of the group has read yet, or tasks waiting on a
-- ranked queue (see submit.lua). Read-only; a sharded claim asks every other shard at
-- once in one round trip, when the shard whose turn it is had nothing.
-- KEYS: 1 ready, 2 ranked, 3 waiting
-- Returns 1 (something to claim: maybe only a wake-up entry, which the claim removes) or 0.
local GROUP = 'workers'
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('ZCARD', KEYS[3]) > 0 then return 1 end
local last = nil
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) ~= 'table' or groups.err then return 0 end -- no stream, or no group yet
for _, g in ipairs(groups) do
  for j = 1, #g - 1, 2 do
    if g[j] == 'name' and g[j + 1] == GROUP then
      for i = 1, #g - 1, 2 do
        if g[i] == 'last-delivered-id' then last = g[i + 1] end
      end
    end
  end
end
if not last then return 0 end
local after = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
if #after > 0 then return 1 end
return 0
