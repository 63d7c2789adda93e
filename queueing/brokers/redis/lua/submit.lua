-- Accept tasks into one queue, atomically with its maxsize.
-- KEYS: 1 outstanding, 2 ready, 3 delayed, 4 envs, 5 stats, 6 live, 7 waiting, 8 ranked,
--       9 nudge, 10..24 the fair keys (_fair.lua), 25.. the record of each task
-- ARGV: 1 maxsize, 2 this client, 3 result ttl (ms), 4 nudge tokens cap, 5 tenant_maxsize
--       (0: none), 6 the form of the tasks' arguments, then per task:
--       - form 0: id, envelope, meta, due (ms; '' for ready now), the client that waits
--         for it ('' for none), priority (0 the default), tenant ('' none);
--       - form N > 0 (compact: plain tasks, ready now, waited for by this client, no
--         priority or tenant): envelope, meta; the id is its record's key after the key's
--         first N characters (the same for every task of the call).
-- Returns the number of tasks, then, for each task not accepted, its position (from 1)
-- and its code: 0 full; 2 its tenant is full (tenant_maxsize); -1 exists (another
-- client's); -2 exists (this client's: our own earlier send, when a lost connection made us
-- resend). Every task not named was accepted: a call whose tasks all got in answers {n}.
--
-- Priorities: a queue's first task of a priority above 0 switches it to ranked mode for
-- good (`ranked` exists: the sequence of its waiting tasks). Then its ready tasks wait in
-- the `waiting` sorted set (score: -priority * LEVEL + sequence, so the lowest score is the
-- next to run) with their envelopes in `envs`, and a claim moves the first ones into the
-- ready stream (take.lua). At the switch, the entries nobody read yet move to `waiting`,
-- in their order. A queue that never sees a priority keeps the stream alone.
--
-- Tenants: a queue's first task with a tenant switches it to fair mode for good (ranked
-- too, see _fair.lua): its ready tasks wait in flows from then on, those waiting by
-- priority moved into the default tenant's ('': the tasks without one). A task with a
-- tenant has it in its record ('n'). With `tenant_maxsize`, every task counts among its
-- tenant's outstanding ones until its outcome ('q' in its record), the default one too.
local F = 10
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local maxsize = tonumber(ARGV[1])
local codes = {#KEYS - 24}
local added = 0
local woken = 0
local tenant_max = tonumber(ARGV[5]) or 0
local ranked = redis.call('EXISTS', KEYS[8]) == 1
local fair = ranked and redis.call('EXISTS', KEYS[F]) == 1
if fair then fair_load() end -- see _fair.lua

local function switch() -- see _ranking.lua
  rank(2, 6, 4, 7, 8)
  ranked = true
end

local function make_fair() -- see _fair.lua
  fair_load()
  if not ranked then switch() end
  redis.call('HINCRBY', KEYS[F], 'seq', 0)
  local waiting = redis.call('ZRANGE', KEYS[7], 0, -1, 'WITHSCORES')
  for j = 1, #waiting, 2 do
    -- score: sequence - priority * LEVEL, half a level more for a retry ahead
    local level = -tonumber(waiting[j + 1]) / LEVEL
    local priority = math.floor(level + 0.5)
    join(F, waiting[j], '', priority, level > priority)
  end
  redis.call('DEL', KEYS[7])
  fair = true
end

local function full(tenant)
  return tenant_max > 0
    and tonumber(redis.call('HGET', KEYS[F + 2], 'o:' .. tenant) or '0') >= tenant_max
end

-- Whether any of the call's records exists, in one command: none, the common case, and
-- each task's own EXISTS is left out (about as costly as the command it runs, each);
-- `made` then tells the records this call wrote (an id twice in the call).
local any = #KEYS >= 25 and redis.call('EXISTS', unpack(KEYS, 25)) > 0
local made = {}
local form = tonumber(ARGV[6])
for i = 25, #KEYS do
  local id, env, meta, due, reply, priority, tenant
  if form > 0 then
    local a = 7 + (i - 25) * 2
    env, meta = ARGV[a], ARGV[a + 1]
    -- The id only where it is used (not by an entry written in the stream, the common
    -- case): each string made costs Redis about as much as a command. A compact call's
    -- tasks change no queue's mode: `ranked` stays as it is through the call.
    if ranked then id = string.sub(KEYS[i], form + 1) end
    due, reply, priority, tenant = '', ARGV[2], 0, ''
  else
    local a = 7 + (i - 25) * 7
    id, env, meta, due, reply = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    priority = tonumber(ARGV[a + 5]) or 0
    tenant = ARGV[a + 6]
  end
  local exists
  if any then exists = redis.call('EXISTS', KEYS[i]) == 1 else exists = made[KEYS[i]] end
  if exists then
    codes[#codes + 1] = i - 24
    codes[#codes + 1] = (redis.call('HGET', KEYS[i], 'r') == ARGV[2]) and -2 or -1
  elseif n >= maxsize then
    codes[#codes + 1] = i - 24
    codes[#codes + 1] = 0
  elseif full(tenant) then
    codes[#codes + 1] = i - 24
    codes[#codes + 1] = 2
  else
    n = n + 1
    added = added + 1
    made[KEYS[i]] = true
    if tenant ~= '' and not fair then make_fair() end
    if priority > 0 and not ranked then switch() end
    if due ~= '' then
      redis.call('HSET', KEYS[4], id, env)
      redis.call('ZADD', KEYS[3], due, id)
      redis.call('HSET', KEYS[i], 's', 'scheduled', 'e', '', 'r', reply, 'm', meta, 't', ARGV[3])
    elseif fair then
      redis.call('HSET', KEYS[4], id, env)
      join(F, id, tenant, priority, false)
      redis.call('HSET', KEYS[i], 's', 'pending', 'e', '', 'r', reply, 'm', meta, 't', ARGV[3])
      woken = woken + 1
    elseif ranked then
      redis.call('HSET', KEYS[4], id, env)
      redis.call('ZADD', KEYS[7], redis.call('INCR', KEYS[8]) - priority * LEVEL, id)
      redis.call('HSET', KEYS[i], 's', 'pending', 'e', '', 'r', reply, 'm', meta, 't', ARGV[3])
      woken = woken + 1
    else
      local entry, certified = add_entry(2, id, env, reply, i, form) -- see _entry.lua
      redis.call('HSET', KEYS[i], 's', 'pending', 'e', entry, 'r', reply, 'm', meta, 't', ARGV[3])
      if not certified then redis.call('HSET', KEYS[6], entry, reply) end
    end
    if priority > 0 then redis.call('HSET', KEYS[i], 'p', priority) end
    if tenant ~= '' then redis.call('HSET', KEYS[i], 'n', tenant) end
    if tenant_max > 0 then -- counted among its tenant's outstanding tasks till its outcome
      redis.call('HSET', KEYS[i], 'q', '1')
      redis.call('HINCRBY', KEYS[F + 2], 'o:' .. tenant, 1)
    end
  end
end
if added > 0 then
  redis.call('INCRBY', KEYS[1], added)
  redis.call('HINCRBY', KEYS[5], 'submitted', added)
end
if woken > 0 then
  -- Wake-ups for consumers idle on a ranked queue (they wait on this list, not the stream).
  local tokens = {}
  for t = 1, math.min(woken, tonumber(ARGV[4])) do tokens[t] = '1' end
  redis.call('LPUSH', KEYS[9], unpack(tokens))
  redis.call('LTRIM', KEYS[9], 0, tonumber(ARGV[4]) - 1)
end
return codes
