-- Sent right after a plain XREADGROUP of up to ARGV[2] new entries for consumer ARGV[1],
-- in the same round trip: what `live` says of the entries that read gave it, that is
-- whether each is the live entry of a task (the one its record names: `live` holds
-- exactly those), and whether the queue is ranked (see submit.lua: its tasks are then
-- claimed through claim.lua). The read is not made here: an entry read inside a script
-- is converted into Lua values and back, which costs Redis more than the rest of a claim.
-- The entries that read gave the consumer are its pending entries after ARGV[3], the
-- newest entry it got from this stream before ('' for none): a read hands out entries
-- after every one handed out before. Another pending entry of the consumer past ARGV[3]
-- (a read whose answer was lost with the connection) takes a place in the answer, and
-- leaves an entry read without an answer: checked by check.lua instead.
-- KEYS: 1 ready, 2 live, 3 ranked
-- ARGV: 1 consumer, 2 count, 3 the newest entry the consumer got before ('' for none)
-- Returns {1 if the queue is ranked else 0, then per pending entry found: its id, the
-- submitting client of its task ('' for none) or false (nil) if `live` does not name it}
-- (flat: a list of lists costs more on both sides).
local GROUP = 'workers'
local out = {redis.call('EXISTS', KEYS[3])}
local from = ARGV[3] == '' and '-' or '(' .. ARGV[3]
local pending = redis.call('XPENDING', KEYS[1], GROUP, from, '+', ARGV[2], ARGV[1])
if #pending == 0 then return out end
local ids = {}
for i, p in ipairs(pending) do ids[i] = p[1] end
local named = redis.call('HMGET', KEYS[2], unpack(ids))
for i, id in ipairs(ids) do
  out[2 * i] = id
  out[2 * i + 1] = named[i]
end
return out
