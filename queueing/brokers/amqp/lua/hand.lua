-- Tasks pick.lua took, handed out to the claiming process: each record now names the
-- claim (its nonce), holds a running slot of its tenant ('u') and a lease (`leased`, until
-- ARGV[1]; renewed by lease.lua, and when it runs out the next pick puts the task back at
-- the front of its flow, counting one more delivery: 'k'). A task that got an outcome
-- meanwhile (cancelled) is not handed out: its slot is given back.
-- KEYS: the fair block, then the record of each task
-- ARGV: 1 lease deadline (ms), then per record: id, nonce, tenant, priority
-- Returns per record: {'+' .. the submitting client, deliveries before, envelope}, or
-- {'=', 0, ''} if it is not handed out
local first = fair_keys(1)
local out = {}
for i = first, #KEYS do
  local a = 2 + (i - first) * 4
  local id, nonce, t, p = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local f = redis.call('HMGET', KEYS[i], 's', 'w', 'k', 'r')
  local env = redis.call('HGET', F.env, id)
  if env and (f[1] == 'pending' or f[1] == 'scheduled') then
    local k = tonumber(f[3] or '0')
    if f[2] then k = k + 1 end -- handed out before, and its lease ran out
    local member = p .. '\0' .. t .. '\0A\0' .. id
    redis.call('HSET', KEYS[i], 's', 'pending', 'e', nonce, 'u', t, 'w', '1', 'd', '', 'k', k,
      'l', member)
    redis.call('HDEL', KEYS[i], 'q')
    redis.call('ZADD', F.leased, ARGV[1], member)
    out[#out + 1] = {'+' .. (f[4] or ''), k, env}
  else
    redis.call('HDEL', F.env, id)
    release_slot(t)
    out[#out + 1] = {'=', 0, ''}
  end
end
return out
