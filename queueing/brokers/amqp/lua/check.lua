-- Messages just delivered by RabbitMQ: is each the message its task's record names?
-- KEYS: the record of the task each message carries
-- ARGV: the nonce (message id) of each message, one per record
-- Returns one string per message: '+' .. the submitting client (a task of ours: run it;
-- the record now says a worker has it); '=' (the task has an outcome: drop the message);
-- '?' (no such task); '!' (the record names another message: a stale copy, drop it)
local out = {}
for i = 1, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 's', 'e', 'r')
  if not f[1] then
    out[i] = '?'
  elseif f[1] ~= 'pending' and f[1] ~= 'scheduled' then
    out[i] = '='
  elseif f[2] ~= ARGV[i] then
    out[i] = '!'
  else
    redis.call('HSET', KEYS[i], 's', 'pending', 'w', '1', 'd', '')
    out[i] = '+' .. (f[3] or '')
  end
end
return out
