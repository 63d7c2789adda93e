-- Tasks this process runs: does each still belong to the message it was run from?
-- KEYS: the record of each task
-- ARGV: the nonce of the message each one was run from, one per record
-- Returns one string per task: '+' yes; '!' no (its record names another message, or it
-- is gone); '=' .. outcome (it has one: settled elsewhere, cancelled say)
local out = {}
for i = 1, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 's', 'e', 'o')
  if f[1] and f[1] ~= 'pending' and f[1] ~= 'scheduled' then
    out[i] = '=' .. (f[3] or '')
  elseif f[2] ~= ARGV[i] then
    out[i] = '!'
  else
    out[i] = '+'
  end
end
return out
