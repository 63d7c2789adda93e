-- A task's message was published again under a new nonce (a retry after a backoff, a
-- hand-back at shutdown, the janitor's republish): its record names the new message from
-- now on, so the old one, if it is ever delivered again, is a stale copy.
-- KEYS: 1 record, 2 stats
-- ARGV: 1 the old nonce ('' for any), 2 the new nonce, 3 state (pending or scheduled),
--       4 meta ('' to keep it), 5 due (ms, '' for none), 6 stats counter ('' for none)
-- Returns 1 moved; 0 it had an outcome (or no such task); -2 the record names another
-- message than the old one (left alone)
local f = redis.call('HMGET', KEYS[1], 's', 'e')
if not f[1] or (f[1] ~= 'pending' and f[1] ~= 'scheduled') then return 0 end
if ARGV[1] ~= '' and f[2] ~= ARGV[1] then return -2 end
redis.call('HSET', KEYS[1], 's', ARGV[3], 'e', ARGV[2], 'd', ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'm', ARGV[4]) end
redis.call('HDEL', KEYS[1], 'w')
if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[6], 1) end
return 1
