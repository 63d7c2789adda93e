-- Reserve tasks in one queue, atomically with its maxsize: the record of each task that
-- fits, before its message is published to RabbitMQ (see _store.py: the record comes
-- first, so a message never arrives before its record). A queue in fair mode (since its
-- first task with a tenant, see _fair.lua) keeps new tasks waiting here instead, in their
-- flows (or delayed until due): a claiming process hands them out in fair order.
-- KEYS: 1 outstanding, 2 stats, 3 unconfirmed, 4 envs, 5..25 the fair block (_fair.lua),
--       26.. the record of each task
-- ARGV: 1 maxsize, 2 this client, 3 result ttl (ms), 4 now (ms), 5 tenant_maxsize (0 for
--       none: then nothing is counted per tenant), then per task: id, nonce, envelope, meta, due (ms; '' for ready now), the
--       client that waits for it, tenant ('' for none), priority, group (the tasks of one
--       accept: past one refused, the rest of its group is refused too, as a prefix is
--       what an accept_many takes)
-- Returns one code per task: 1 reserved (publish it); 0 full; 2 its tenant is full; -1
-- exists; -2 exists with this nonce (our own earlier send, when a lost connection made us
-- send again); 3 kept waiting here (not to publish); 4 the same, and the queue turned fair
-- with it (the caller moves what waits in RabbitMQ here)
local first = fair_keys(5)
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local maxsize = tonumber(ARGV[1])
local tenant_max = tonumber(ARGV[5])
local fair = redis.call('HGET', F.fair, 'on')
local codes = {}
local added = 0
local refused = {}
for i = first, #KEYS do
  local a = 6 + (i - first) * 9
  local id, nonce, env, meta, due, reply, tenant, p, group =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6],
    ARGV[a + 7], ARGV[a + 8]
  if refused[group] then
    codes[#codes + 1] = refused[group]
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    local f = redis.call('HMGET', KEYS[i], 'e', 'q')
    if f[1] == nonce then
      codes[#codes + 1] = f[2] and 3 or -2
    else
      codes[#codes + 1] = -1
    end
  elseif n >= maxsize then
    codes[#codes + 1] = 0
    refused[group] = 0
  elseif tenant_max > 0 and tonumber(redis.call('HGET', F.out, tenant) or '0') >= tenant_max then
    codes[#codes + 1] = 2
    refused[group] = 2
  else
    local code = 1
    if tenant ~= '' and not fair then
      -- The queue turns fair: the flows of the default tenant start first (they hold what
      -- waits in RabbitMQ now, moved here by the caller).
      fair = '1'
      redis.call('HSET', F.fair, 'on', '1')
      for level = 0, 9 do
        if n > 0 and not redis.call('HGET', F.tags, level .. '\0') then
          set_tag(tostring(level), '', vtime(level))
        end
      end
      code = 4
    end
    n = n + 1
    added = added + 1
    local state = (due ~= '') and 'scheduled' or 'pending'
    redis.call('HSET', KEYS[i], 's', state, 'e', nonce, 'r', reply, 'm', meta, 't', ARGV[3],
      'd', due)
    if tenant_max > 0 then -- counted per tenant ('' the default one), until its outcome
      redis.call('HSET', KEYS[i], 'n', tenant)
      redis.call('HINCRBY', F.out, tenant, 1)
    end
    if fair then
      redis.call('HSET', KEYS[i], 'q', '1')
      redis.call('HSET', F.env, id, reply .. '\n' .. env)
      if due ~= '' then
        delay(p, tenant, 'C', due, id)
      else
        enqueue(p, tenant, back(), id)
      end
      if code == 1 then code = 3 end
    else
      -- Until RabbitMQ confirmed the message: if this client stops first, a serving
      -- process publishes it again from here (the janitor, see _upkeep.py).
      redis.call('ZADD', KEYS[3], ARGV[4], id)
      redis.call('HSET', KEYS[4], id, env)
    end
    codes[#codes + 1] = code
  end
end
if added > 0 then
  redis.call('INCRBY', KEYS[1], added)
  redis.call('HINCRBY', KEYS[2], 'submitted', added)
end
return codes
