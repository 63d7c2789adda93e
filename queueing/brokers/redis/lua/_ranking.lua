-- The ranking of a queue's waiting tasks by priority, shared by submit.lua and
-- promote.lua: loaded in front of each (see `_calls.PRELUDES`). Keys still arrive
-- through KEYS[]: `rank` takes their indices, as each script lists them in its own order.
local GROUP = 'workers'
local LEVEL = 1099511627776 -- 2^40 sequence numbers per priority level

local function field(flat, name)
  for j = 1, #flat - 1, 2 do
    if flat[j] == name then return flat[j + 1] end
  end
  return nil
end

-- Switch a queue to ranked mode for good: the entries no consumer has read yet (past the
-- group's last delivered id) wait by priority from now on, ahead of what comes next (they
-- came first). Indices in KEYS of the queue's ready stream, live hash, envs hash, waiting
-- set and ranked sequence.
local function rank(ready, live, envs, waiting, sequence)
  local last, grouped = '0-0', false
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[ready])
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      if field(g, 'name') == GROUP then
        last = field(g, 'last-delivered-id') or last
        grouped = true
      end
    end
  end
  local backlog = redis.call('XRANGE', KEYS[ready], '(' .. last, '+')
  for _, e in ipairs(backlog) do
    local id, env = field(e[2], 'id'), field(e[2], 'env')
    if env and not id then -- an entry written by _entry.lua: the envelope has the id
      local ok, doc = pcall(cjson.decode, env)
      if ok and type(doc) == 'table' and type(doc.id) == 'string' then id = doc.id end
    end
    if id and env then -- anything else stays for a reader to dead-letter
      redis.call('XDEL', KEYS[ready], e[1])
      redis.call('HDEL', KEYS[live], e[1])
      redis.call('HSET', KEYS[envs], id, env)
      redis.call('ZADD', KEYS[waiting], redis.call('INCR', KEYS[sequence]), id)
    end
  end
  redis.call('INCRBY', KEYS[sequence], 0) -- ranked from now on, even with nothing moved
  if #backlog == 0 and grouped then
    -- Consumers may be blocked reading the stream (with entries unread, none is): a
    -- wake-up entry, no task, makes them look again and find the queue ranked (the claim
    -- that reads it acknowledges and removes it; until then `ready` counts it).
    redis.call('XADD', KEYS[ready], '*', 'wake', '1')
  end
end
