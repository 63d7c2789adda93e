-- A task's record as a lookup reports it, and whether a worker runs it now (its entry
-- was handed to a consumer: it is in the group's pending list).
-- KEYS: 1 record, 2 ready
-- Returns {state, meta, outcome, '1' if running else ''}; state nil if no record
local GROUP = 'workers'
local f = redis.call('HMGET', KEYS[1], 's', 'm', 'o', 'e')
local running = ''
if f[1] == 'pending' and f[4] and f[4] ~= '' then
  -- pcall: a stream or group that is gone (Redis lost data) means not running.
  local p = redis.pcall('XPENDING', KEYS[2], GROUP, f[4], f[4], 1)
  if type(p) == 'table' and not p.err and p[1] then running = '1' end
end
return {f[1], f[2], f[3], running}
