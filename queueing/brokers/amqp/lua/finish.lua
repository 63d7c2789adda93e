-- Record a task's outcome: the first outcome wins.
-- KEYS: 1 record, 2 outstanding, 3 stats, 4 room, 5 dead, 6.. the fair block
--       (_fair.lua) [, then the replies stream of the submitting client]
-- ARGV: 1 the nonce of the message it was run from ('' for a cancel: whatever message
--       the record names), 2 state, 3 outcome, 4 ttl (ms), 5 task id, 6 stats counter,
--       7 dead letter or '', 8 dead letters cap, 9 replies cap, 10 replies ttl (s),
--       11 room tokens, 12 the submitting client that stream is of, 13 the longest
--       outcome a notice carries along, 14 the queue's maxsize
-- A task of a fair queue gives back its tenant's running slot (if it held one: 'u') and
-- its place among the tenant's outstanding tasks ('n').
-- Returns 1 recorded; 0 it had an outcome; -1 no such task; -2 the record names another
-- message (this one was a stale copy: the task is left alone)
local replies = KEYS[fair_keys(6)]
local f = redis.call('HMGET', KEYS[1], 's', 'e', 'r', 'm', 'u', 'n', 'l', 'q')
if not f[1] then return -1 end
if f[1] ~= 'pending' and f[1] ~= 'scheduled' then return 0 end
-- ('q': a fair queue's task whose claim's hand.lua is not written yet, a round trip behind
-- this one: the claim is this one's.)
if ARGV[1] ~= '' and f[2] ~= ARGV[1] and not f[8] then return -2 end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'o', ARGV[3])
redis.call('HDEL', KEYS[1], 'w', 'd', 'u', 'q', 'l', 'k')
-- The running slot goes with the lease: whoever ends the lease gives the slot back (a
-- lease that ran out gave it back already).
if f[7] and redis.call('ZREM', F.leased, f[7]) == 1 then release_slot(f[5] or '') end
if f[6] then less_out(f[6]) end
if f[8] then forget(ARGV[5]) end -- waiting in its flow (cancelled): out of it
if f[6] or f[5] or f[7] or f[8] then
  redis.call('HDEL', F.env, ARGV[5])
  redis.call('HDEL', F.again, ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
-- (Within `finish_many`, BATCH gathers the counts and the streams' expiries of all its
-- outcomes, written once at its end.)
if BATCH then
  BATCH.counts[ARGV[6]] = (BATCH.counts[ARGV[6]] or 0) + 1
else
  redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
end
-- A room token only when the queue was full: someone may wait for room then.
local left = redis.call('DECR', KEYS[2])
if left < 0 then redis.call('SET', KEYS[2], 0) end
-- (Or when its tenant's count is kept: its tenant may have been full.)
if left + 1 >= tonumber(ARGV[14]) or f[6] then
  redis.call('LPUSH', KEYS[4], 1)
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[11]) - 1)
end
if replies and f[3] == ARGV[12] then
  -- The notice carries the outcome just stored (and the record's meta), unless it is long:
  -- then the client reads the record.
  if string.len(ARGV[3]) <= tonumber(ARGV[13]) then
    -- One field: state, meta and outcome, one a line (JSON holds no raw newline).
    redis.call('XADD', replies, 'MAXLEN', '~', ARGV[9], '*', 'id', ARGV[5],
      'r', ARGV[2] .. '\n' .. (f[4] or '') .. '\n' .. ARGV[3])
  else
    redis.call('XADD', replies, 'MAXLEN', '~', ARGV[9], '*', 'id', ARGV[5])
  end
  if BATCH then BATCH.expire[replies] = ARGV[10] else redis.call('EXPIRE', replies, ARGV[10]) end
end
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'id', ARGV[5], 'd', ARGV[7])
end
return 1
