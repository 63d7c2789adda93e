-- Reserve tasks in one queue, atomically with its maxsize: the record of each task that
-- fits, before its message is published to RabbitMQ (see _store.py: the record comes
-- first, so a message never arrives before its record).
-- KEYS: 1 outstanding, 2 stats, 3 unconfirmed, 4 envs, 5.. the record of each task
-- ARGV: 1 maxsize, 2 this client, 3 result ttl (ms), 4 now (ms), then per task: id,
--       nonce, envelope, meta, due (ms; '' for ready now), the client that waits for it
-- Returns one code per task: 1 reserved; 0 full; -1 exists; -2 exists with this nonce
-- (our own earlier send, when a lost connection made us send again)
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local maxsize = tonumber(ARGV[1])
local codes = {}
local added = 0
for i = 5, #KEYS do
  local a = 5 + (i - 5) * 6
  local id, nonce, env, meta, due, reply =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  if redis.call('EXISTS', KEYS[i]) == 1 then
    codes[#codes + 1] = (redis.call('HGET', KEYS[i], 'e') == nonce) and -2 or -1
  elseif n >= maxsize then
    codes[#codes + 1] = 0
  else
    n = n + 1
    added = added + 1
    local state = (due ~= '') and 'scheduled' or 'pending'
    redis.call('HSET', KEYS[i], 's', state, 'e', nonce, 'r', reply, 'm', meta, 't', ARGV[3],
      'd', due)
    -- Until RabbitMQ confirmed the message: if this client stops first, a serving process
    -- publishes it again from here (the janitor, see _upkeep.py).
    redis.call('ZADD', KEYS[3], ARGV[4], id)
    redis.call('HSET', KEYS[4], id, env)
    codes[#codes + 1] = 1
  end
end
if added > 0 then
  redis.call('INCRBY', KEYS[1], added)
  redis.call('HINCRBY', KEYS[2], 'submitted', added)
end
return codes
