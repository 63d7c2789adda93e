-- The steps of a pipeline run (each one atomic, each one idempotent).
-- KEYS: 1 the run's record, 2 the run's state, 3 the pipeline's done stream
-- ARGV: 1 step, 2 run id, 3 now (wall clock), 4 done cap, then per step:
--   start:   5 submitting client, 6 meta, 7 result ttl (ms), 8 run ttl (s), 9 route,
--            10 submitted_at                      -> 1 created, -1 it exists
--   advance: 5 stage task id, 6 children, 7 fanned '1'/'0'
--   branch:  5 branch path key, 6 result (JSON)
--   end:     5 state, 6 outcome (JSON)
-- advance, branch and end return {submitting client, outcome, meta} if this call gave the
-- run its outcome, else 0.
local step, run_id, now, done_cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function settled(state, outcome)
  redis.call('HSET', KEYS[1], 's', state, 'o', outcome)
  redis.call('PEXPIRE', KEYS[1], redis.call('HGET', KEYS[1], 't'))
  redis.call('DEL', KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', done_cap, '*', 'id', run_id)
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
  redis.call('HSET', KEYS[1], 's', 'pending', 'e', '', 'r', ARGV[5], 'm', ARGV[6], 't', ARGV[7])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  redis.call('HSET', KEYS[2], 'pending', 1, 'route', ARGV[9], 'submitted_at', ARGV[10])
  redis.call('EXPIRE', KEYS[2], ARGV[8])
  return 1
elseif step == 'advance' then
  if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
  if redis.call('HSETNX', KEYS[2], 'a:' .. ARGV[5], 1) == 0 then return 0 end
  if ARGV[7] == '1' then redis.call('HSET', KEYS[2], 'fanned', '1') end
  if redis.call('HINCRBY', KEYS[2], 'pending', tonumber(ARGV[6]) - 1) <= 0 then
    return complete()
  end
  return 0
elseif step == 'branch' then
  if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
  if redis.call('HSETNX', KEYS[2], 'r:' .. ARGV[5], ARGV[6]) == 0 then return 0 end
  if redis.call('HINCRBY', KEYS[2], 'pending', -1) <= 0 then return complete() end
  return 0
elseif step == 'end' then
  if not pending() then
    redis.call('DEL', KEYS[2])
    return 0
  end
  return settled(ARGV[5], ARGV[6])
end
return redis.error_reply('unknown run step ' .. tostring(step))
