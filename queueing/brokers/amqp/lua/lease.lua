-- Tasks of fair queues this process runs (handed out by hand.lua): does each still belong
-- to this claim? Those that do have their lease extended.
-- KEYS: the fair block, then the record of each task
-- ARGV: 1 new lease deadline (ms), then the nonce of each claim, one per record
-- Returns one string per task: '+' yes; '!' no (handed out again, or gone); '=' ..
-- outcome (it has one: settled elsewhere, cancelled say)
local first = fair_keys(1)
local out = {}
for i = first, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 's', 'e', 'o', 'l', 'q')
  if f[1] and f[1] ~= 'pending' and f[1] ~= 'scheduled' then
    out[#out + 1] = '=' .. (f[3] or '')
  elseif f[5] and f[2] ~= ARGV[i - first + 2] then
    out[#out + 1] = '+' -- its claim's hand.lua is not written yet (see finish.lua)
  elseif f[2] ~= ARGV[i - first + 2] or not f[4] then
    out[#out + 1] = '!'
  else
    redis.call('ZADD', F.leased, 'XX', ARGV[1], f[4])
    out[#out + 1] = '+'
  end
end
return out
