-- RabbitMQ confirmed the messages of some reserved tasks: the janitor leaves them alone.
-- KEYS: 1 unconfirmed, 2 envs
-- ARGV: the task ids
redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
return 1
