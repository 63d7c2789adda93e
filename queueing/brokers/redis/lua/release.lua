-- Hand back claimed tasks that were never started: each goes back to the ready stream as
-- a new entry, which its record then names (no one waits out a lease for it).
-- KEYS: 1 ready, 2 live, 3.. the record of each task
-- ARGV: per task: the entry it was claimed from, task id, envelope
-- Returns how many were handed back.
local GROUP = 'workers'
local back = 0
for i = 3, #KEYS do
  local a = (i - 3) * 3 + 1
  local entry, id, env = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local f = redis.call('HMGET', KEYS[i], 's', 'e', 'r')
  redis.call('XACK', KEYS[1], GROUP, entry)
  redis.call('XDEL', KEYS[1], entry)
  if f[1] == 'pending' and f[2] == entry then
    local new, certified = add_entry(1, id, env, f[3] or '') -- see _entry.lua
    redis.call('HSET', KEYS[i], 'e', new)
    redis.call('HDEL', KEYS[2], entry)
    if not certified then redis.call('HSET', KEYS[2], new, f[3] or '') end
    back = back + 1
  end
end
return back
