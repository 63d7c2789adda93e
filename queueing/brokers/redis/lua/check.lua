-- Entries read from a queue's ready stream that neither show themselves live (`x`: see
-- _entry.lua) nor are named by `live` (rare: a copy, forged or stale, or an entry of an
-- older version): is each the entry its task's record names?
-- KEYS: 1 ready, 2 live, 3.. the record of the task id each entry claims
-- ARGV: the entry ids, one per record
-- Returns one string per entry: '+' .. the submitting client (a task of ours: run it; it
-- is named in `live` from now on); '=' (the task has an outcome: the entry is acknowledged
-- and removed here); '?' (no such task); '!' (the record names another entry: a forged or
-- stale copy)
local GROUP = 'workers'
local out = {}
for i = 3, #KEYS do
  local entry = ARGV[i - 2]
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
    redis.call('HSET', KEYS[2], entry, f[3] or '')
    out[#out + 1] = '+' .. (f[3] or '')
  end
end
return out
