-- Fair share between tenants (start-time fair queuing over flows: the module doc of
-- queueing/brokers/_contract.py), shared by the scripts that move tasks in and out of a
-- fair queue's flows: loaded in front of each (see `_calls.PRELUDES`).
--
-- A queue turns fair at its first task with a tenant (submit.lua), for good; it is ranked
-- too then (_ranking.lua), and from then on every ready task waits in a flow (one per
-- tenant and priority; tasks without a tenant are the default tenant's, '', limited as
-- any other). Its keys,
-- passed in KEYS[] from index F on (`Keys.fair`, always in this order):
--   F     `fair`    hash: 'seq' the sequence of FIFO positions and tags; 'v<p>' the
--                   virtual time V of priority p; 'f<flow>' a flow's tag "S seq" (the
--                   flow has ready tasks); 't<task id>' the task's member in `fifo`
--   F + 1 `fifo`    sorted set, all scores 0: every ready task as <flow><mark><seq>|<id>,
--                   so that a flow's tasks are one range in lexical order (mark 'a': a
--                   retry of a `retry_ahead` queue, ahead of the 'b's: new tasks)
--   F + 2 `tenants` hash: 'r:<t>' tasks of tenant t claimed and not settled, retried
--                   or released (`tenant_concurrency`); 'a:<t>' the cap of a tenant
--                   whose flows are set aside; 'o:<t>' its outstanding tasks
--                   (`tenant_maxsize`)
--   F + 3 `backlog` sorted set: tenant -> its ready tasks (`tenant_figures`)
--   F + 4 `nudge`   the queue's wake-ups for idle consumers (as ranked queues')
--   F + 5 + p       `heads:<p>`: sorted set, the flows of priority p with a head that
--                   may be taken: score S, member <seq><flow> (a tie of S goes to the
--                   flow tagged first)
-- A flow's name: <p>:<length of the tenant>:<tenant>| (no flow's name starts another's).
-- S and V are doubles, kept as text with every digit ('%.17g'): the same arithmetic as
-- every other broker's.
local MAX_LEVEL = 9 -- queueing._task.MAX_PRIORITY

-- The functions below are made on a script's first call of `fair_load()` (before it uses
-- any of them), not each time a script runs: each closure made costs Redis about as much
-- as a command, and most calls (a queue without tenants) use none of them.
local flow_of, parse_flow, exact, next_seq, flow_head, id_of, vtime, tag_of, aside, tag, tally,
  join, untag, leave, set_aside, nudge, unrun, unhold, first_heads

local function fair_load()
  if flow_of then return true end
  function flow_of(tenant, p)
    return p .. ':' .. #tenant .. ':' .. tenant .. '|'
  end

  function parse_flow(flow)
    local colon = flow:find(':', 3, true)
    local n = tonumber(flow:sub(3, colon - 1))
    return flow:sub(colon + 1, colon + n), tonumber(flow:sub(1, 1))
  end

  function exact(x)
    return string.format('%.17g', x)
  end

  function next_seq(F)
    return string.format('%016d', redis.call('HINCRBY', KEYS[F], 'seq', 1))
  end

  -- The first task of a flow (its member in `fifo`), or nil.
  function flow_head(F, flow)
    return redis.call('ZRANGE', KEYS[F + 1], '[' .. flow, '(' .. flow .. '\255', 'BYLEX',
      'LIMIT', 0, 1)[1]
  end

  function id_of(member, flow)
    return member:sub(#flow + 19)
  end

  function vtime(F, p)
    return tonumber(redis.call('HGET', KEYS[F], 'v' .. p) or '0')
  end

  -- A flow's tag: S and its sequence (text), or nil (the flow has no ready task).
  function tag_of(F, flow)
    local t = redis.call('HGET', KEYS[F], 'f' .. flow)
    if not t then return nil, nil end
    local sp = t:find(' ', 1, true)
    return tonumber(t:sub(1, sp - 1)), t:sub(sp + 1)
  end

  function aside(F, tenant)
    return redis.call('HEXISTS', KEYS[F + 2], 'a:' .. tenant) == 1
  end

  -- Give a flow the start tag S (a new sequence: ties go in the order tags were set), and
  -- its head to `heads` unless its tenant is set aside.
  function tag(F, flow, tenant, p, S)
    local seq = next_seq(F)
    redis.call('HSET', KEYS[F], 'f' .. flow, exact(S) .. ' ' .. seq)
    if not aside(F, tenant) then redis.call('ZADD', KEYS[F + 5 + p], S, seq .. flow) end
  end

  function tally(F, tenant, by)
    if tonumber(redis.call('ZINCRBY', KEYS[F + 3], by, tenant)) <= 0 then
      redis.call('ZREM', KEYS[F + 3], tenant)
    end
  end

  -- A ready task joins the back of its flow (`ahead`: the front, behind the flow's earlier
  -- ahead ones); a flow that gets its first ready task starts at S = V.
  function join(F, id, tenant, p, ahead)
    local flow = flow_of(tenant, p)
    local member = flow .. (ahead and 'a' or 'b') .. next_seq(F) .. '|' .. id
    redis.call('ZADD', KEYS[F + 1], 0, member)
    redis.call('HSET', KEYS[F], 't' .. id, member)
    tally(F, tenant, 1)
    if redis.call('HEXISTS', KEYS[F], 'f' .. flow) == 0 then tag(F, flow, tenant, p, vtime(F, p)) end
  end

  -- A flow with no ready task left: its tag and head go.
  function untag(F, flow, p)
    local _, seq = tag_of(F, flow)
    if seq then
      redis.call('HDEL', KEYS[F], 'f' .. flow)
      redis.call('ZREM', KEYS[F + 5 + p], seq .. flow)
    end
  end

  -- A ready task leaves its flow without being taken (cancelled); false if it was in none.
  function leave(F, id)
    local member = redis.call('HGET', KEYS[F], 't' .. id)
    if not member then return false end
    redis.call('HDEL', KEYS[F], 't' .. id)
    redis.call('ZREM', KEYS[F + 1], member)
    local flow = member:sub(1, #member - #id - 18)
    local tenant, p = parse_flow(flow)
    tally(F, tenant, -1)
    if not flow_head(F, flow) then untag(F, flow, p) end
    return true
  end

  -- The flows of a tenant at its cap go out of `heads` (their tags stay).
  function set_aside(F, tenant, cap)
    redis.call('HSET', KEYS[F + 2], 'a:' .. tenant, cap)
    for p = 0, MAX_LEVEL do
      local flow = flow_of(tenant, p)
      local _, seq = tag_of(F, flow)
      if seq then redis.call('ZREM', KEYS[F + 5 + p], seq .. flow) end
    end
  end

  -- Wake-ups for consumers idle on the queue (they wait on `nudge`).
  function nudge(F, woken, cap)
    if woken <= 0 then return end
    local tokens = {}
    for t = 1, math.min(woken, cap) do tokens[t] = '1' end
    redis.call('LPUSH', KEYS[F + 4], unpack(tokens))
    redis.call('LTRIM', KEYS[F + 4], 0, cap - 1)
  end

  -- A counted task of `tenant` is settled, retried or released: one less running; a tenant
  -- set aside that is below its cap now has its flows back, at S = max(S, V).
  function unrun(F, tenant, tokens)
    local left = redis.call('HINCRBY', KEYS[F + 2], 'r:' .. tenant, -1)
    if left <= 0 then redis.call('HDEL', KEYS[F + 2], 'r:' .. tenant) end
    local cap = tonumber(redis.call('HGET', KEYS[F + 2], 'a:' .. tenant))
    if not cap or left >= cap then return end
    redis.call('HDEL', KEYS[F + 2], 'a:' .. tenant)
    local back = 0
    for p = 0, MAX_LEVEL do
      local flow = flow_of(tenant, p)
      local S = tag_of(F, flow)
      if S then
        tag(F, flow, tenant, p, math.max(S, vtime(F, p)))
        back = back + 1
      end
    end
    nudge(F, back, tokens)
  end

  -- A task counted among its tenant's outstanding ones got its outcome.
  function unhold(F, tenant)
    if redis.call('HINCRBY', KEYS[F + 2], 'o:' .. tenant, -1) <= 0 then
      redis.call('HDEL', KEYS[F + 2], 'o:' .. tenant)
    end
  end

  -- The first `count` heads that may be taken (highest priority first, then lowest S, then
  -- the flow tagged first), each {its heads member, S, priority, tenant, the ids of its
  -- first `count` tasks}: what a claimer works out the next tasks from (see take_fair.lua).
  function first_heads(F, count)
    local heads = {}
    for p = MAX_LEVEL, 0, -1 do
      local room = count - #heads
      if room <= 0 then break end
      local got = redis.call('ZRANGE', KEYS[F + 5 + p], 0, room - 1, 'WITHSCORES')
      for j = 1, #got, 2 do
        local flow = got[j]:sub(17)
        local members = redis.call('ZRANGE', KEYS[F + 1], '[' .. flow, '(' .. flow .. '\255',
          'BYLEX', 'LIMIT', 0, count)
        local ids = {}
        for m = 1, #members do ids[m] = id_of(members[m], flow) end
        heads[#heads + 1] = {got[j], got[j + 1], p, (parse_flow(flow)), ids}
      end
    end
    return heads
  end
  return true
end
