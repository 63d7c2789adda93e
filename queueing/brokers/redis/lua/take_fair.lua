-- Claim the next tasks of a fair queue (see _fair.lua). Entries the ready stream has for
-- a reader come first, as in claim.lua (then nothing else is taken). Else take heads in
-- the contract's order (highest priority, lowest S, the flow tagged first) while each is
-- one of the ids the claimer expects (worked out with the weights from claim.lua's answer
-- or this script's last one; it has their records' keys), at most one per id; move them
-- into the ready stream, then read as many new entries for the consumer. Concurrent
-- claims are safe: a task is taken by whoever removes it from its flow; a claim whose
-- guess went wrong takes fewer.
-- Taking a flow's head sets V = S (of its priority), then S += 1 / weight for the flow's
-- next head. A task counts as running of its tenant ('c' in its record); a tenant at its
-- `tenant_concurrency` has its flows set aside (see unrun in _fair.lua).
-- KEYS: 1 ready, 2 live, 3 envs, 4..18 the fair keys, 19.. the record of each id
-- ARGV: 1 consumer, 2 tenant_concurrency (0: none), 3 count, 4 W, then W pairs (tenant,
--       weight), then the ids, one per record
-- Returns {what claim.lua returns for entries read, the first `count` heads left
-- (first_heads: the claimer's next guess; none when stream entries were read)}.
local GROUP = 'workers'
local F = 4
fair_load() -- see _fair.lua
local cap = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local W = tonumber(ARGV[4])
local weights = {}
for j = 5, 4 + 2 * W, 2 do weights[ARGV[j]] = tonumber(ARGV[j + 1]) end
local wanted = {}
local first = 5 + 2 * W
for i = 19, #KEYS do wanted[ARGV[first + i - 19]] = i end

-- The head to take next: its heads member, S and priority (nil: none). Within one call
-- no level above the last one found gets a head (a take tags its flow at its own level).
local top = MAX_LEVEL
local function best()
  for p = top, 0, -1 do
    local h = redis.call('ZRANGE', KEYS[F + 5 + p], 0, 0, 'WITHSCORES')
    if h[1] then
      top = p
      return h[1], tonumber(h[2]), p
    end
  end
  top = -1
  return nil
end

-- Take task `id` (record KEYS[i]), the head of `flow` (heads member `head`, start tag S,
-- priority p); true if it went into the stream.
local function take(head, flow, member, id, i, S, p)
  local tenant = parse_flow(flow)
  redis.call('ZREM', KEYS[F + 1], member)
  redis.call('HDEL', KEYS[F], 't' .. id)
  redis.call('ZREM', KEYS[F + 5 + p], head)
  redis.call('HSET', KEYS[F], 'v' .. p, exact(S))
  tally(F, tenant, -1)
  if flow_head(F, flow) then
    tag(F, flow, tenant, p, S + 1 / (weights[tenant] or 1))
  else
    redis.call('HDEL', KEYS[F], 'f' .. flow)
  end
  local env = redis.call('HGET', KEYS[3], id)
  redis.call('HDEL', KEYS[3], id)
  if not env then return false end
  local entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'env', env)
  local f = redis.call('HMGET', KEYS[i], 's', 'r', 'c')
  if f[1] == 'pending' then
    redis.call('HSET', KEYS[i], 'e', entry)
    redis.call('HSET', KEYS[2], entry, f[2] or '')
    if not f[3] then
      redis.call('HSET', KEYS[i], 'c', '1')
      local running = redis.call('HINCRBY', KEYS[F + 2], 'r:' .. tenant, 1)
      if cap > 0 and running >= cap then set_aside(F, tenant, cap) end
    end
  end
  return true
end

-- Entries a reader has not had: read first, as claim.lua does (a wake-up entry, no task,
-- is acknowledged and removed).
local function read(n)
  local got = redis.call('XREADGROUP', 'GROUP', GROUP, ARGV[1], 'COUNT', n, 'STREAMS',
    KEYS[1], '>')
  local out = {}
  if not got then return out end
  for _, e in ipairs(got[1][2]) do
    if e[2][1] == 'wake' then
      redis.call('XACK', KEYS[1], GROUP, e[1])
      redis.call('XDEL', KEYS[1], e[1])
    else
      out[#out + 1] = {e[1], e[2], owner_of(e[1], e[2], redis.call('HGET', KEYS[2], e[1]))}
    end
  end
  return out
end

local unread = read(count)
if #unread > 0 then return {unread, {}} end

local moved, taken = 0, 0
while taken < #KEYS - 18 do
  local head, S, p = best()
  if not head then break end
  local flow = head:sub(17)
  local member = flow_head(F, flow)
  if member then
    local id = id_of(member, flow)
    local i = wanted[id]
    if not i then break end -- not what the claimer expected: it claims again
    wanted[id] = nil
    taken = taken + 1
    if take(head, flow, member, id, i, S, p) then moved = moved + 1 end
  else -- a head without tasks (never left so): it goes
    redis.call('ZREM', KEYS[F + 5 + p], head)
    redis.call('HDEL', KEYS[F], 'f' .. flow)
  end
end
if moved == 0 then return {{}, first_heads(F, count)} end
return {read(moved), first_heads(F, count)}
