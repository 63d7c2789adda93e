-- Messages just delivered by RabbitMQ: is each the message its task's record names?
-- KEYS: the record of the task each message carries
-- ARGV: 1 a due time (ms) after which a message is early, then the nonce (message id) of
--       each message, one per record
-- Returns one string per message: '+' .. the submitting client (a task of ours: run it;
-- the record now says a worker has it); '>' .. its due time in ms (its message, back from
-- a delay queue before its due time: a delay longer than one delay queue holds, published
-- again for the rest); '=' (the task has an outcome: drop the message); '?' (no such
-- task); '!' (the record names another message: a stale copy, drop it)
local early = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 's', 'e', 'r', 'd')
  if not f[1] then
    out[i] = '?'
  elseif f[1] ~= 'pending' and f[1] ~= 'scheduled' then
    out[i] = '='
  elseif f[2] ~= ARGV[i + 1] then
    out[i] = '!'
  elseif f[1] == 'scheduled' and f[4] and f[4] ~= '' and tonumber(f[4]) > early then
    out[i] = '>' .. f[4]
  else
    redis.call('HSET', KEYS[i], 's', 'pending', 'w', '1', 'd', '')
    out[i] = '+' .. (f[3] or '')
  end
end
return out
