-- Tasks reserved before a time whose message RabbitMQ has not confirmed (for the janitor).
-- KEYS: 1 unconfirmed
-- ARGV: 1 reserved before (ms), 2 how many at most
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
