-- Tasks pick.lua took and leased to a claiming process (sent with its next writes): each
-- record now names the claim (its nonce), holds a running slot of its tenant ('u') and
-- its lease's member ('l'). A task that got an outcome meanwhile (cancelled, or settled by
-- its claim a round trip ahead of this) gives its slot and its lease back.
-- KEYS: the fair block, then the record of each task
-- ARGV: per record: id, nonce, tenant, priority
-- Returns per record: 1 handed out, 0 not (it has an outcome)
local first = fair_keys(1)
local out = {}
for i = first, #KEYS do
  local a = 1 + (i - first) * 4
  local id, nonce, t, p = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local s = redis.call('HGET', KEYS[i], 's')
  local member = p .. '\0' .. t .. '\0A\0' .. id
  if not redis.call('ZSCORE', F.leased, member) then
    -- Its lease ended before this (ran out, or a retry or hand-back of the claim came
    -- first): whoever ended it gave the slot back; nothing to point at.
    out[#out + 1] = 0
  elseif s == 'pending' or s == 'scheduled' then
    redis.call('HSET', KEYS[i], 's', 'pending', 'e', nonce, 'u', t, 'w', '1', 'd', '',
      'l', member)
    redis.call('HDEL', KEYS[i], 'q')
    out[#out + 1] = 1
  else
    redis.call('HDEL', F.env, id)
    redis.call('HDEL', F.again, id)
    redis.call('ZREM', F.leased, member)
    release_slot(t)
    out[#out + 1] = 0
  end
end
return out
