-- Take up to ARGV[2] new entries of a queue's ready stream for a consumer, without
-- waiting, and say of each whether it is the live entry of a task (the one its record
-- names: `live` holds exactly those, written and removed by the scripts that write the
-- records' `e`).
-- KEYS: 1 ready, 2 live, 3 ranked, 4 waiting, 5..19 the fair keys (_fair.lua)
-- ARGV: 1 consumer, 2 count
-- Returns per entry read: {entry id, its fields (flat), the submitting client of its task
-- ('' for none), or nil if `live` does not name the entry (checked again by check.lua)}.
-- With no entry to read on a ranked queue (see submit.lua): {'ranked', the ids of the
-- next tasks to run, up to the count} (take.lua moves them into the stream). A wake-up
-- entry (`wake`, no task: written when the queue was ranked) is acknowledged and removed.
-- On a fair queue (see _fair.lua): {'fair', then per flow among the first `count` heads
-- (highest priority first, then lowest S, then the flow tagged first): {its heads member,
-- S, priority, tenant, the ids of its first `count` tasks}} (the claimer works out which
-- tasks come next with the tenants' weights; take.lua takes them).
local GROUP = 'workers'
local got = redis.call('XREADGROUP', 'GROUP', GROUP, ARGV[1], 'COUNT', ARGV[2], 'STREAMS',
  KEYS[1], '>')
local out, ids = {}, {}
if got then
  for _, e in ipairs(got[1][2]) do
    if e[2][1] == 'wake' then
      redis.call('XACK', KEYS[1], GROUP, e[1])
      redis.call('XDEL', KEYS[1], e[1])
    else
      out[#out + 1] = {e[1], e[2]}
      ids[#ids + 1] = e[1]
    end
  end
end
if #ids > 0 then -- what `live` says of them, in one read
  local owners = redis.call('HMGET', KEYS[2], unpack(ids))
  for i, e in ipairs(out) do e[3] = owner_of(e[1], e[2], owners[i]) end -- see _entry.lua
end
if #out > 0 or redis.call('EXISTS', KEYS[3]) == 0 then return out end
if redis.call('EXISTS', KEYS[5]) == 1 then
  fair_load() -- see _fair.lua
  local heads = first_heads(5, tonumber(ARGV[2]))
  table.insert(heads, 1, 'fair')
  return heads
end
local ids = redis.call('ZRANGE', KEYS[4], 0, tonumber(ARGV[2]) - 1)
table.insert(ids, 1, 'ranked')
return ids
