-- The next tasks of a fair queue, in the contract's order (see _fair.lua): the head of the
-- flow with the highest priority, then the lowest S, then the tag set first; taking it
-- sets V = S, then S += 1 / weight. A tenant at `cap` running tasks is skipped: its flows
-- are set aside, and come back with S = max(S, V) once it is below the cap. Due delayed
-- tasks join their flows first, and tasks whose lease ran out (their process stopped) go
-- back to the front of theirs. Taken tasks count as running for their tenant and are
-- leased (until ARGV[5]); hand.lua then points their records at the claim.
-- KEYS: the fair block
-- ARGV: 1 how many, 2 now (ms), 3 cap (tenant_concurrency, 0 for none), 4 '1' if tenants
--       have weights (then a tenant without one in `weight` stops the pick: asked for),
--       5 the lease deadline (ms)
-- Returns {id, tenant, priority, client \n envelope, deliveries before, ...} per task
-- taken, then, if a weight is wanted, '?' and the tenant.
fair_keys(1)
local n, now, cap, weighted = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local expired = redis.call('ZRANGEBYSCORE', F.leased, '-inf', now, 'LIMIT', 0, 100)
for _, m in ipairs(expired) do
  redis.call('ZREM', F.leased, m)
  local parts = split(m)
  release_slot(parts[2])
  redis.call('HINCRBY', F.again, parts[4], 1)
  enqueue(parts[1], parts[2], front(), parts[4])
end
local freed = redis.call('SMEMBERS', F.freed)
if #freed > 0 then redis.call('DEL', F.freed) end
for _, t in ipairs(freed) do
  if cap == 0 or running(t) < cap then
    local aside = redis.call('ZRANGEBYLEX', F.aside, '[' .. t .. '\0', '(' .. t .. '\1')
    for _, m in ipairs(aside) do
      redis.call('ZREM', F.aside, m)
      local p = string.sub(m, #t + 2)
      local S = tag_of(p, t)
      if S then set_tag(p, t, math.max(S, vtime(p))) end
    end
  end
end
local due = redis.call('ZRANGEBYSCORE', F.delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
for i = 1, #due, 2 do
  redis.call('ZREM', F.delayed, due[i])
  local parts = split(due[i])
  local p, t, how, id = parts[1], parts[2], parts[3], parts[4]
  local place
  if how == 'A' then
    place = front()
  elseif how == 'B' then
    place = 'B' .. pad(tonumber(due[i + 1])) .. pad(counter('ord'))
  else
    place = back()
  end
  enqueue(p, t, place, id)
end
local out = {}
while #out < 5 * n do
  local top, level
  for p = 9, 0, -1 do
    top = redis.call('ZRANGE', F.flows[p], 0, 0, 'WITHSCORES')
    if top[1] then level = tostring(p); break end
  end
  if not level then break end
  local t = string.sub(top[1], 18)
  local S = tonumber(top[2])
  local h = head(level, t)
  if not h then
    drop_flow(level, t)
  elseif cap > 0 and running(t) >= cap then
    redis.call('ZREM', F.flows[tonumber(level)], top[1])
    redis.call('ZADD', F.aside, 0, t .. '\0' .. level)
  else
    local inverse = 1
    if weighted and t ~= '' then
      inverse = tonumber(redis.call('HGET', F.weight, t) or '0')
      if inverse <= 0 then
        out[#out + 1] = '?'
        out[#out + 1] = t
        return out
      end
    end
    redis.call('ZREM', F.tasks, h)
    if redis.call('HINCRBY', F.wait, t, -1) <= 0 then redis.call('HDEL', F.wait, t) end
    redis.call('HINCRBY', F.run, t, 1)
    redis.call('HSET', F.fair, 'V' .. level, num(S))
    if head(level, t) then set_tag(level, t, S + inverse) else drop_flow(level, t) end
    local id = split(h)[4]
    redis.call('HDEL', F.where, id)
    redis.call('ZADD', F.leased, ARGV[5], level .. '\0' .. t .. '\0A\0' .. id)
    out[#out + 1] = id
    out[#out + 1] = t
    out[#out + 1] = level
    out[#out + 1] = redis.call('HGET', F.env, id) or ''
    out[#out + 1] = redis.call('HGET', F.again, id) or '0'
  end
end
return out
