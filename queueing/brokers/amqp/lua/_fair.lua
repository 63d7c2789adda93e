-- Fair share between tenants (loaded in front of the scripts that use it; see _fair.py):
-- start-time fair queuing over flows, the contract's order (queueing/brokers/_contract.py,
-- "Fair share"). A flow is the waiting tasks of one tenant ('' for the default one) at one
-- priority. Keys, one block of them in KEYS[] (fair_keys takes its first index):
--   fair     hash: 'on' once the queue had a task with a tenant; 'V<p>' the virtual time
--            of priority p; 'seq' and 'ord' counters (tags, task order)
--   tasks    zset, one score, ordered by member: p \0 tenant \0 place \0 id (a flow's
--            tasks are a range; place: 'A' handed back, 'B' due retry ahead, 'C' in turn)
--   tags     hash p \0 tenant -> 'S member' of each flow (in `flows:p`, or set aside)
--   aside    zset by member: tenant \0 p, the flows of a tenant at its tenant_concurrency
--   freed    set: tenants that released a running slot while flows of theirs were aside
--   run      hash tenant -> tasks handed out and without an outcome or a retry
--   wait     hash tenant -> tasks waiting in flows
--   delayed  zset by due (ms): p \0 tenant \0 how \0 id (how: 'A' front, 'B' retry ahead,
--            'C' back of the flow), made ready by the next pick once due
--   env      hash id -> the submitting client \n the envelope, of a task waiting here (or
--            handed out)
--   weight   hash tenant -> 1 / weight (written by claiming processes, see _fair.py)
--   out      hash tenant -> outstanding tasks (accepted, no outcome: tenant_maxsize)
--   leased   zset by lease deadline (ms): p \0 tenant \0 'A' \0 id of each task handed
--            out (its envelope stays in `env`); one whose lease ran out goes back to the
--            front of its flow at the next pick
--   again    hash id -> how many times the task's lease ran out (its deliveries before)
--   where    hash id -> 'T' .. its member of `tasks`, or 'D' .. its member of `delayed`,
--            for each task waiting here (so that a cancel takes it out)
--   flows:p  zset per priority 0..9: score S, member seq \0 tenant (a tie goes to the
--            tag set first: the lower seq)
local F = {}
-- The block's keys from KEYS[base] on, in the order above (and `_store.py`'s FAIR_NAMES):
-- one table constructor, sized at once (filling F key by key cost more than the rest of a
-- short script). Returns the index after the block.
local function fair_keys(base)
  local K = KEYS
  F = {fair = K[base], tasks = K[base + 1], tags = K[base + 2], aside = K[base + 3],
    freed = K[base + 4], run = K[base + 5], wait = K[base + 6], delayed = K[base + 7],
    env = K[base + 8], weight = K[base + 9], out = K[base + 10], leased = K[base + 11],
    again = K[base + 12], where = K[base + 13],
    flows = {[0] = K[base + 14], K[base + 15], K[base + 16], K[base + 17], K[base + 18],
      K[base + 19], K[base + 20], K[base + 21], K[base + 22], K[base + 23]}}
  return base + 24
end
local function num(x) return string.format('%.17g', x) end
local function pad(n) return string.format('%016d', n) end
local function counter(field) return redis.call('HINCRBY', F.fair, field, 1) end
local function vtime(p) return tonumber(redis.call('HGET', F.fair, 'V' .. p) or '0') end
local function split(s)
  local parts, from = {}, 1
  while true do
    local at = string.find(s, '\0', from, true)
    if not at or #parts == 3 then parts[#parts + 1] = string.sub(s, from); return parts end
    parts[#parts + 1] = string.sub(s, from, at - 1)
    from = at + 1
  end
end
local function tag_of(p, t)
  local old = redis.call('HGET', F.tags, p .. '\0' .. t)
  if not old then return nil end
  local at = string.find(old, ' ', 1, true)
  return tonumber(string.sub(old, 1, at - 1)), string.sub(old, at + 1)
end
-- Give flow (p, t) the start tag S, set now (after every tag set before).
local function set_tag(p, t, S)
  local _, old = tag_of(p, t)
  if old then redis.call('ZREM', F.flows[tonumber(p)], old) end
  local member = pad(counter('seq')) .. '\0' .. t
  redis.call('ZADD', F.flows[tonumber(p)], num(S), member)
  redis.call('HSET', F.tags, p .. '\0' .. t, num(S) .. ' ' .. member)
end
local function drop_flow(p, t)
  local _, old = tag_of(p, t)
  if old then redis.call('ZREM', F.flows[tonumber(p)], old) end
  redis.call('HDEL', F.tags, p .. '\0' .. t)
end
local function head(p, t)
  return redis.call('ZRANGEBYLEX', F.tasks, '[' .. p .. '\0' .. t .. '\0',
    '(' .. p .. '\0' .. t .. '\1', 'LIMIT', 0, 1)[1]
end
local function back() return 'C' .. pad(counter('ord')) end
local function front() return 'A' .. pad(1e15 - counter('ord')) end
-- A task joins flow (p, t) at `place`; a flow that gets its first task starts at S = V.
local function enqueue(p, t, place, id)
  local member = p .. '\0' .. t .. '\0' .. place .. '\0' .. id
  redis.call('ZADD', F.tasks, 0, member)
  redis.call('HSET', F.where, id, 'T' .. member)
  redis.call('HINCRBY', F.wait, t, 1)
  if not redis.call('HGET', F.tags, p .. '\0' .. t) then set_tag(p, t, vtime(p)) end
end
local function running(t) return tonumber(redis.call('HGET', F.run, t) or '0') end
-- A task of tenant t no longer holds a running slot: its flows set aside come back at the
-- next pick (pick.lua checks the cap).
local function release_slot(t)
  if redis.call('HINCRBY', F.run, t, -1) <= 0 then redis.call('HDEL', F.run, t) end
  if redis.call('ZRANGEBYLEX', F.aside, '[' .. t .. '\0', '(' .. t .. '\1', 'LIMIT', 0, 1)[1] then
    redis.call('SADD', F.freed, t)
  end
end
local function less_out(t)
  if redis.call('HINCRBY', F.out, t, -1) <= 0 then redis.call('HDEL', F.out, t) end
end
-- A task waits here until `due` (ms), then joins flow (p, t) (`how`: 'A' the front, 'B'
-- the front behind earlier due retries, 'C' the back).
local function delay(p, t, how, due, id)
  local member = p .. '\0' .. t .. '\0' .. how .. '\0' .. id
  redis.call('ZADD', F.delayed, due, member)
  redis.call('HSET', F.where, id, 'D' .. member)
end
-- A task waiting here leaves (it got an outcome: cancelled).
local function forget(id)
  local where = redis.call('HGET', F.where, id)
  if not where then return end
  redis.call('HDEL', F.where, id)
  local member = string.sub(where, 2)
  if string.sub(where, 1, 1) == 'D' then
    redis.call('ZREM', F.delayed, member)
  elseif redis.call('ZREM', F.tasks, member) == 1 then
    local t = split(member)[2]
    if redis.call('HINCRBY', F.wait, t, -1) <= 0 then redis.call('HDEL', F.wait, t) end
  end
end
