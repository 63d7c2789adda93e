-- Read which of some tasks have an outcome (only those records travel back).
-- KEYS: task records (of one queue or pipeline)
-- ARGV: 1 '1' to also report tasks without an outcome yet (their submitting client)
-- Returns a flat list of 4 values per task reported: index, state, outcome, meta for a
-- task with an outcome; index, '', '', '' for one without a record; index, '~', its
-- submitting client, '' for one without an outcome yet (if asked).
local out = {}
for i = 1, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 's', 'o', 'm', 'r')
  if not f[1] then
    out[#out + 1] = i
    out[#out + 1] = ''
    out[#out + 1] = ''
    out[#out + 1] = ''
  elseif f[1] ~= 'pending' and f[1] ~= 'scheduled' then
    out[#out + 1] = i
    out[#out + 1] = f[1]
    out[#out + 1] = f[2] or ''
    out[#out + 1] = f[3] or ''
  elseif ARGV[1] == '1' then
    out[#out + 1] = i
    out[#out + 1] = '~'
    out[#out + 1] = f[4] or ''
    out[#out + 1] = ''
  end
end
return out
