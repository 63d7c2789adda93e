-- Entries just read from a queue's ready stream: is each the entry its task's record names?
-- KEYS: 1 ready, 2.. the record of the task id each entry claims
-- ARGV: the entry ids, one per record
-- Returns one string per entry: '+' .. the submitting client (a task of ours: run it);
-- '=' (the task has an outcome: the entry is acknowledged and removed here);
-- '?' (no such task); '!' (the record names another entry: a forged or stale copy)
local GROUP = 'workers'
local out = {}
for i = 2, #KEYS do
  local entry = ARGV[i - 1]
  local f = redis.call('HMGET', KEYS[i], 's', 'e', 'r')
  if not f[1] then
    out[#out + 1] = '?'
  elseif f[1] ~= 'pending' and f[1] ~= 'scheduled' then
    redis.call('XACK', KEYS[1], GROUP, entry)
    redis.call('XDEL', KEYS[1], entry)
    out[#out + 1] = '='
  elseif f[2] ~= entry then
    out[#out + 1] = '!'
  else
    -- 'w': a worker runs it now (lookups report RUNNING); a retry or a hand-back clears it.
    redis.call('HSET', KEYS[i], 'w', '1')
    out[#out + 1] = '+' .. (f[3] or '')
  end
end
return out
