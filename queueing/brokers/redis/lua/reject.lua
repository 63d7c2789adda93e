-- Dead-letter an entry that is not a task of ours (it is never run).
-- KEYS: 1 ready, 2 dead
-- ARGV: 1 entry, 2 dead letter, 3 dead letters cap
-- Returns 1, or 0 if it was handled already (a resend after a lost connection).
local GROUP = 'workers'
if redis.call('XACK', KEYS[1], GROUP, ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'id', '', 'd', ARGV[2])
return 1
