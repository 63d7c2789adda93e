-- Renew the leases of entries this consumer holds.
-- KEYS: 1 ready, 2.. the record of each task
-- ARGV: 1 consumer, 2.. the entry each task was claimed from, one per record
-- Returns one string per task: '+' renewed; '!' no longer ours (another consumer
-- reclaimed it after we stalled past the lease, or the record names another entry);
-- '=' .. outcome (it has one: settled elsewhere, cancelled say); '?' it has no record
-- (Redis lost it)
local GROUP = 'workers'
local out = {}
for i = 2, #KEYS do
  local entry = ARGV[i]
  local f = redis.call('HMGET', KEYS[i], 's', 'e', 'o')
  if not f[1] then
    out[#out + 1] = '?'
  elseif f[1] ~= 'pending' and f[1] ~= 'scheduled' then
    out[#out + 1] = '=' .. (f[3] or '')
  elseif f[2] ~= entry then
    out[#out + 1] = '!'
  else
    local p = redis.call('XPENDING', KEYS[1], GROUP, entry, entry, 1)
    if p[1] and p[1][2] == ARGV[1] then
      -- Resets the idle time without counting a delivery.
      redis.call('XCLAIM', KEYS[1], GROUP, ARGV[1], 0, entry, 'JUSTID')
      out[#out + 1] = '+'
    else
      out[#out + 1] = '!'
    end
  end
end
return out
