-- The steps of a pipeline run (each one atomic, each one idempotent); the same steps as
-- the Redis broker's run.lua, without its `done` stream (see _store_runs.py).
-- KEYS: 1 the run's record, 2 the run's state
-- ARGV: 1 step, 2 run id, 3 now (wall clock), then per step:
--   start:   4 submitting client, 5 meta, 6 result ttl (ms), 7 run ttl (s), 8 route,
--            9 submitted_at                      -> 1 created, -1 it exists
--   advance: 4 stage task id, 5 children, 6 fanned '1'/'0'
--   branch:  4 branch path key, 5 result (JSON)
--   end:     4 state, 5 outcome (JSON)
-- advance, branch and end return {submitting client, outcome, meta} if this call gave the
-- run its outcome, else 0.
local step, run_id, now = ARGV[1], ARGV[2], ARGV[3]

local function settled(state, outcome)
  redis.call('HSET', KEYS[1], 's', state, 'o', outcome)
  redis.call('PEXPIRE', KEYS[1], redis.call('HGET', KEYS[1], 't'))
  redis.call('DEL', KEYS[2])
  local f = redis.call('HMGET', KEYS[1], 'r', 'm')
  return {f[1] or '', outcome, f[2] or ''}
end

local function pending()
  local s = redis.call('HGET', KEYS[1], 's')
  return s == 'pending' or s == 'scheduled'
end

-- The last branch is done: the run's result is its branches' results, in path order.
local function complete()
  if not pending() then
    redis.call('DEL', KEYS[2])
    return 0
  end
  local fields = redis.call('HGETALL', KEYS[2])
  local h, results = {}, {}
  for i = 1, #fields, 2 do
    h[fields[i]] = fields[i + 1]
    if string.sub(fields[i], 1, 2) == 'r:' then results[#results + 1] = fields[i] end
  end
  table.sort(results)
  local result
  if h['fanned'] == '1' then
    local parts = {}
    for _, key in ipairs(results) do parts[#parts + 1] = h[key] end
    result = '[' .. table.concat(parts, ',') .. ']'
  else
    result = h['r:'] or 'null'
  end
  local outcome = '{"state":"succeeded","result":' .. result ..
    ',"error":null,"attempts":0,"deliveries":0,"finished_at":' .. now ..
    ',"stage":0,"fanned":' .. (h['fanned'] == '1' and 'true' or 'false') .. '}'
  return settled('succeeded', outcome)
end

if step == 'start' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
  redis.call('HSET', KEYS[1], 's', 'pending', 'e', '', 'r', ARGV[4], 'm', ARGV[5], 't', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('HSET', KEYS[2], 'pending', 1, 'route', ARGV[8], 'submitted_at', ARGV[9])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  return 1
elseif step == 'advance' then
  if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
  if redis.call('HSETNX', KEYS[2], 'a:' .. ARGV[4], 1) == 0 then return 0 end
  if ARGV[6] == '1' then redis.call('HSET', KEYS[2], 'fanned', '1') end
  if redis.call('HINCRBY', KEYS[2], 'pending', tonumber(ARGV[5]) - 1) <= 0 then
    return complete()
  end
  return 0
elseif step == 'branch' then
  if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
  if redis.call('HSETNX', KEYS[2], 'r:' .. ARGV[4], ARGV[5]) == 0 then return 0 end
  if redis.call('HINCRBY', KEYS[2], 'pending', -1) <= 0 then return complete() end
  return 0
elseif step == 'end' then
  if not pending() then
    redis.call('DEL', KEYS[2])
    return 0
  end
  return settled(ARGV[4], ARGV[5])
end
return redis.error_reply('unknown run step ' .. tostring(step))
