-- A task of a fair queue leaves its worker without an outcome: a retry (waits here until
-- due, then joins the back of its flow, or with retry_ahead the front behind earlier due
-- retries) or a hand-back (the front of its flow at once). Its running slot is released;
-- its record names no message until a claim hands it out again.
-- KEYS: 1 record, 2 stats, 3.. the fair block
-- ARGV: 1 the nonce of the message it ran from, 2 state, 3 meta ('' to keep it), 4 due
--       (ms), 5 stats counter ('' for none), 6 id, 7 tenant, 8 priority, 9 how ('A' front,
--       'B' retry ahead, 'C' back), 10 the submitting client \n the envelope
-- Returns 1 done; 0 it had an outcome (or no such task); -2 the record names another
-- message (left alone)
fair_keys(3)
local f = redis.call('HMGET', KEYS[1], 's', 'e', 'u', 'l', 'q')
if not f[1] or (f[1] ~= 'pending' and f[1] ~= 'scheduled') then return 0 end
if f[2] ~= ARGV[1] and not f[5] then return -2 end -- ('q': see finish.lua)
redis.call('HSET', KEYS[1], 's', ARGV[2], 'e', '', 'd', ARGV[4], 'q', '1')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'm', ARGV[3]) end
redis.call('HDEL', KEYS[1], 'w', 'u', 'l')
-- The running slot goes with the lease (see finish.lua); with 'q' the claim's hand.lua is
-- not written yet: its lease is the one pick.lua made.
local lease = f[4] or (ARGV[8] .. '\0' .. ARGV[7] .. '\0A\0' .. ARGV[6])
if redis.call('ZREM', F.leased, lease) == 1 then release_slot(f[3] or ARGV[7]) end
redis.call('HDEL', F.again, ARGV[6])
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[5], 1) end
redis.call('HSET', F.env, ARGV[6], ARGV[10])
delay(ARGV[8], ARGV[7], ARGV[9], ARGV[4] == '' and 0 or ARGV[4], ARGV[6])
return 1
