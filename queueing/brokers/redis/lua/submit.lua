-- Accept tasks into one queue, atomically with its maxsize.
-- KEYS: 1 outstanding, 2 ready, 3 delayed, 4 envs, 5 stats, 6 live, 7.. the record of each
--       task
-- ARGV: 1 maxsize, 2 this client, 3 result ttl (ms), then per task: id, envelope, meta,
--       due (ms; '' for ready now), the client that waits for it ('' for none)
-- Returns one code per task: 1 accepted; 0 full; -1 exists (another client's);
-- -2 exists (this client's: our own earlier send, when a lost connection made us resend)
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local maxsize = tonumber(ARGV[1])
local codes = {}
local added = 0
for i = 7, #KEYS do
  local a = 4 + (i - 7) * 5
  local id, env, meta, due, reply = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  if redis.call('EXISTS', KEYS[i]) == 1 then
    codes[#codes + 1] = (redis.call('HGET', KEYS[i], 'r') == ARGV[2]) and -2 or -1
  elseif n >= maxsize then
    codes[#codes + 1] = 0
  else
    n = n + 1
    added = added + 1
    if due ~= '' then
      redis.call('HSET', KEYS[4], id, env)
      redis.call('ZADD', KEYS[3], due, id)
      redis.call('HSET', KEYS[i], 's', 'scheduled', 'e', '', 'r', reply, 'm', meta, 't', ARGV[3])
    else
      local entry = redis.call('XADD', KEYS[2], '*', 'id', id, 'env', env)
      redis.call('HSET', KEYS[i], 's', 'pending', 'e', entry, 'r', reply, 'm', meta, 't', ARGV[3])
      redis.call('HSET', KEYS[6], entry, reply)
    end
    codes[#codes + 1] = 1
  end
end
if added > 0 then
  redis.call('INCRBY', KEYS[1], added)
  redis.call('HINCRBY', KEYS[5], 'submitted', added)
end
return codes
