-- Keep the dead letter of a message that is not a task of ours (it is never run).
-- KEYS: 1 dead
-- ARGV: 1 dead letter, 2 dead letters cap
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'id', '', 'd', ARGV[1])
return 1
