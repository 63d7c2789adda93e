-- The janitor: take over tasks whose client stopped between reserving them and RabbitMQ
-- confirming their message (a message may or may not exist). Each gets a new nonce, so
-- the old message, if there is one, is a stale copy; the janitor publishes the new one.
-- KEYS: 1 unconfirmed, 2 envs, 3.. the record of each id
-- ARGV: 1 now (ms), 2 reserved before (ms), 3 nonce prefix, then the ids
-- Returns per id: id, new nonce, envelope, due (ms or ''); nothing for an id that was
-- confirmed, settled or adopted meanwhile (it is dropped from the set)
local out = {}
for i = 3, #KEYS do
  local id = ARGV[i + 1]
  local since = redis.call('ZSCORE', KEYS[1], id)
  if since and tonumber(since) <= tonumber(ARGV[2]) then
    local f = redis.call('HMGET', KEYS[i], 's', 'd')
    local env = redis.call('HGET', KEYS[2], id)
    if env and (f[1] == 'pending' or f[1] == 'scheduled') then
      local nonce = ARGV[3] .. id
      redis.call('HSET', KEYS[i], 'e', nonce)
      redis.call('HDEL', KEYS[i], 'w')
      -- Kept (with a fresh time) until the new message is confirmed.
      redis.call('ZADD', KEYS[1], ARGV[1], id)
      out[#out + 1] = id
      out[#out + 1] = nonce
      out[#out + 1] = env
      out[#out + 1] = f[2] or ''
    else
      redis.call('ZREM', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
    end
  end
end
return out
