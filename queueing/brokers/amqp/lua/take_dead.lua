-- Remove and return dead letters: those of some task ids, or all of them.
-- KEYS: 1 dead
-- ARGV: the task ids to take (none: take all)
-- Returns the dead letters taken (their 'd' field; '' if an entry has none).
local want = nil
if #ARGV > 0 then
  want = {}
  for _, id in ipairs(ARGV) do want[id] = true end
end
local out = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local id, d = '', ''
  for j = 1, #e[2], 2 do
    if e[2][j] == 'id' then id = e[2][j + 1] elseif e[2][j] == 'd' then d = e[2][j + 1] end
  end
  if want == nil or want[id] then
    redis.call('XDEL', KEYS[1], e[1])
    out[#out + 1] = d
  end
end
return out
