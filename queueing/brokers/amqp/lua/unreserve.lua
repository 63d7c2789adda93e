-- Take back a reservation whose message RabbitMQ refused (a full queue nacked it).
-- KEYS: 1 record, 2 outstanding, 3 unconfirmed, 4 envs, 5 stats, 6 outstanding by tenant
-- ARGV: 1 task id, 2 nonce
-- Returns 1 if the reservation was taken back; 0 if the record names another message or
-- has an outcome (left alone)
local f = redis.call('HMGET', KEYS[1], 's', 'e', 'n')
if f[2] ~= ARGV[2] or (f[1] ~= 'pending' and f[1] ~= 'scheduled') then return 0 end
redis.call('DEL', KEYS[1])
if f[3] and redis.call('HINCRBY', KEYS[6], f[3], -1) <= 0 then redis.call('HDEL', KEYS[6], f[3]) end
if redis.call('DECR', KEYS[2]) < 0 then redis.call('SET', KEYS[2], 0) end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], 'submitted', -1)
return 1
