-- Messages that wait in RabbitMQ's ready queues of a queue that turned fair (published
-- before it did, or since by a delay queue, the janitor): each task joins its flow here
-- (`how`: 'A' the front, in the order given last to first; 'C' the back), then the
-- message is acknowledged. A stale copy, or the message of a task with an outcome, is
-- left out (acknowledged too).
-- KEYS: the fair block, unconfirmed, envs, then the record of each task
-- ARGV: 1 how, then per record: id, nonce, tenant, priority, envelope
-- Returns per record: 1 adopted; 0 dropped; -1 no such task
local at = fair_keys(1)
local first = at + 2
local out = {}
for i = first, #KEYS do
  local a = 2 + (i - first) * 5
  local id, nonce, t, p, env = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local f = redis.call('HMGET', KEYS[i], 's', 'e', 'u', 'l', 'r')
  if not f[1] then
    out[#out + 1] = -1
  elseif (f[1] ~= 'pending' and f[1] ~= 'scheduled') or f[2] ~= nonce then
    out[#out + 1] = 0
  else
    if f[4] and redis.call('ZREM', F.leased, f[4]) == 1 then release_slot(f[3] or '') end
    redis.call('HSET', KEYS[i], 's', 'pending', 'e', '', 'd', '', 'q', '1')
    redis.call('HDEL', KEYS[i], 'w', 'u', 'l')
    redis.call('ZREM', KEYS[at], id)
    redis.call('HDEL', KEYS[at + 1], id)
    redis.call('HSET', F.env, id, (f[5] or '') .. '\n' .. env)
    redis.call('HDEL', F.again, id)
    enqueue(p, t, ARGV[1] == 'A' and front() or back(), id)
    out[#out + 1] = 1
  end
end
return out
