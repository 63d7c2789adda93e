-- Record the outcomes of tasks of one queue and release them: the first outcome wins.
-- KEYS: 1 ready, 2 outstanding, 3 stats, 4 room, 5 done, 6 dead, 7 delayed, 8 envs,
--       9 live, 10 waiting, 11 held, 12..26 the fair keys (_fair.lua; or, in a short
--       call, 12 and 13 only: `fair` and `tenants`), then per task: its record [, the
--       replies stream of its client]
-- ARGV: 1 dead letters cap, 2 done cap, 3 replies cap, 4 replies ttl (s), 5 room tokens
--       (and nudge tokens), 6 the longest outcome a notice carries, 7 the outcomes' ttl
--       (ms), 8 where the task id starts in its record's key (the records' keys are
--       `<prefix>task:<task id>`), 9 '1' for every fair key in KEYS, '' for a short call,
--       then per task: the entry it was claimed from ('' for
--       a cancel: whatever entry or delay the record names), its state, its outcome [, its
--       dead letter]. The state may start with '+' (the replies stream of the task's
--       client follows its record in KEYS: the client its live entry or its record
--       names; its notice goes there if the outcome is recorded), or '=' (its client's
--       stream is the one of the task before it in the call, not passed again), then '!'
--       (its dead letter follows the outcome). Three arguments and one key for a plain
--       outcome: every one costs Redis about as much as a command.
-- A queue without tenants reads only whether `fair` or `tenants` exists, so the caller
-- passes the other 13 fair keys only for a queue it knows has tenants: a short call on a
-- queue that has them returns 'fair' before it writes anything (sent again in full).
-- Returns one code per task: 1 recorded; 0 it had an outcome; -1 no such task; -2 the
-- record names another entry (the one given is acknowledged and removed; the task is
-- left alone)
-- A task counts no more among its tenant's ('n' in its record; none: the default one)
-- outstanding ones if it did ('q'), nor among its running ones ('c'); one cancelled while
-- it waited in a fair queue's flow leaves it. Those fields are read only on a queue that
-- has tenants' counts (`fair` or `tenants` exists): every argument and every value read
-- costs Redis about as much as a command.
-- Notices: one entry per call in `done` while it exists (a client that reads it keeps it:
-- watch.lua), and one per replies stream, whose fields are the task ids, each with its
-- outcome ('' when it is long: read from the record).
-- Stats: each outcome counts under its state's name ('dead_lettered' for 'dead-lettered').
local GROUP = 'workers'
local F = 12
local COUNTERS = {['dead-lettered'] = 'dead_lettered'}
-- How much older (ms, by entry id) than the newest entry finished here the oldest pending
-- entry may be before the entries finished here are deleted one by one (see the end).
local LINGER = 1000
-- Outcomes of one state (counted in `stats`) between two trims of the ready stream.
local TRIM_EVERY = 64

-- Past maxmemory (noeviction) Redis refuses a script's first command that may grow memory
-- unless the script has written before (it keeps a script whole): this acknowledgement of
-- an id never delivered changes nothing and lets the outcomes be stored even then, so that
-- tasks accepted finish, not run again once their lease runs out (_maxmemory.py).
redis.call('XACK', KEYS[1], GROUP, '0-1')

local function ms_of(entry) -- the time part of an entry id, as a number
  return tonumber(string.sub(entry, 1, string.find(entry, '-', 1, true) - 1))
end

-- The later of two entry ids (a may be nil), cheaply: ids of one length compare as text
-- (their times have as many digits until the year 2286); otherwise by the time's digits,
-- then the time as text, then the sequence's digits.
local function later(a, b)
  if not a then return b end
  if #a == #b then return (b > a) and b or a end
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  if da ~= db then return (db > da) and b or a end
  local ma, mb = string.sub(a, 1, da), string.sub(b, 1, db)
  if ma ~= mb then return (mb > ma) and b or a end
  return (#b > #a) and b or a
end

-- The replies stream of the last task that passed one (the stream of those after it
-- marked '='): its key and its index in KEYS.
local newest, dropped, stream, at = nil, {}, nil, nil
local gone, codes, counters, notices, streams, done = {}, {}, {}, {}, {}, {}
local recorded = 0
local ttl, from, carried_max = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[6])
local full = ARGV[9] == '1'
-- What is rare, in one read (none of them, the common case): whether the queue has
-- tenants (`fair`, `tenants`), some client reads `done` (watch.lua: no entry there for
-- no one), `live` names entries (those written without `x`: _entry.lua) or `held` exists
-- (a task holds the trim back: below). Counts tell which: at most one read more each.
local tk = full and F + 2 or F + 1 -- `tenants`
local rare = redis.call('EXISTS', KEYS[F], KEYS[tk], KEYS[5], KEYS[9], KEYS[11])
local watched = rare > 0 and redis.call('EXISTS', KEYS[5]) == 1
if watched then rare = rare - 1 end
local tenants = (rare > 0) and redis.call('EXISTS', KEYS[F], KEYS[tk]) or 0
local tenanted = tenants > 0
local marked = rare > tenants -- `live` or `held`
if tenanted and not full then return 'fair' end
if tenanted then fair_load() end -- see _fair.lua
local k = full and 27 or 14
local a = 10
while a <= #ARGV do
  local entry, state, outcome = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local letter, mark, mine = '', string.byte(state), nil
  a = a + 3
  if mark == 43 then -- '+': its client's replies stream follows its record in KEYS
    at = k + 1
    stream = KEYS[at]
    mine = stream
    state = string.sub(state, 2)
  elseif mark == 61 then -- '=': its client's is the stream of the task before with one
    mine = stream
    state = string.sub(state, 2)
  end
  if string.byte(state) == 33 then -- '!'
    letter = ARGV[a]
    a = a + 1
    state = string.sub(state, 2)
  end
  local id = string.sub(KEYS[k], from)
  local f
  if tenanted then
    f = redis.call('HMGET', KEYS[k], 's', 'e', 'n', 'c', 'q')
  else
    f = redis.call('HMGET', KEYS[k], 's', 'e')
  end
  local code = 1
  if not f[1] then
    code = -1
  elseif f[1] ~= 'pending' and f[1] ~= 'scheduled' then
    code = 0
  elseif entry ~= '' and f[2] ~= entry then
    code = -2
  end
  if entry ~= '' then
    gone[#gone + 1] = entry
    newest = later(newest, entry)
  end
  if code == 1 then
    if entry == '' and f[2] and f[2] ~= '' then
      gone[#gone + 1] = f[2]
      dropped[#dropped + 1] = f[2] -- a cancel's: maybe never read by a consumer
    end
    if f[1] == 'scheduled' then
      redis.call('ZREM', KEYS[7], id)
      redis.call('HDEL', KEYS[8], id)
    elseif entry == '' and redis.call('ZREM', KEYS[10], id) == 1 then
      redis.call('HDEL', KEYS[8], id) -- cancelled while it waited on a ranked queue
    elseif entry == '' and (f[2] or '') == '' and tenanted and leave(F, id) then
      redis.call('HDEL', KEYS[8], id) -- cancelled while it waited in a fair queue's flow
    end
    if f[4] then unrun(F, f[3] or '', tonumber(ARGV[5])) end
    if f[5] then unhold(F, f[3] or '') end
    -- (Its `e` stays: read only while a record is pending or scheduled.)
    redis.call('HSET', KEYS[k], 's', state, 'o', outcome)
    if f[4] then redis.call('HDEL', KEYS[k], 'c') end
    redis.call('PEXPIRE', KEYS[k], ttl)
    local counter = COUNTERS[state] or state
    counters[counter] = (counters[counter] or 0) + 1
    recorded = recorded + 1
    if watched then
      done[#done + 1] = id
      done[#done + 1] = ''
    end
    if mine then
      -- The outcome rides along (a copy: the record keeps it), unless it is long.
      local first = streams[mine] -- the first index in KEYS of this stream
      if not first then
        first = at
        streams[mine] = first
        notices[first] = {}
      end
      local carried = notices[first]
      carried[#carried + 1] = id
      carried[#carried + 1] = (#outcome <= carried_max) and outcome or ''
    end
    if letter ~= '' then
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[1], '*', 'id', id, 'd', letter)
    end
  end
  codes[#codes + 1] = code
  if mark == 43 then k = k + 2 else k = k + 1 end
end
-- Whether this call trims the ready stream (see below): not at every call (each trim left
-- out saves Redis its two commands and XPENDING's answer in Lua, which
-- bench/redis_script_cost.py measures), but every TRIM_EVERY outcomes of a state, when
-- the queue has no task left, and at every call while a task holds the trim back.
local trim, flagged = recorded == 0, false
if recorded > 0 then
  local left = redis.call('DECRBY', KEYS[2], recorded)
  if left <= 0 then
    trim = true
    if left < 0 then redis.call('SET', KEYS[2], 0) end
  end
  for counter, n in pairs(counters) do
    -- (The totals only grow: each passes every multiple of TRIM_EVERY.)
    if redis.call('HINCRBY', KEYS[3], counter, n) % TRIM_EVERY < n then trim = true end
  end
  -- A token per task recorded, up to the cap: a list already full (nobody waits for
  -- room, the common case) costs one LLEN.
  local room = math.min(recorded, tonumber(ARGV[5]) - redis.call('LLEN', KEYS[4]))
  if room > 0 then
    local tokens = {}
    for i = 1, room do tokens[i] = '1' end
    redis.call('LPUSH', KEYS[4], unpack(tokens))
  end
end
if #gone > 0 then
  redis.call('XACK', KEYS[1], GROUP, unpack(gone))
  flagged = marked
  if flagged then
    redis.call('HDEL', KEYS[9], unpack(gone))
    trim = true
  end
end
if #dropped > 0 then redis.call('XDEL', KEYS[1], unpack(dropped)) end
if newest and trim then
  -- The entries finished here go with every acknowledged one before them, in one trim:
  -- up to the oldest pending entry (a task running, or a lease to reclaim), or past the
  -- newest entry finished here (every entry up to it was read by a consumer: entries are
  -- read in order, and added after all others). XDEL of each entry costs Redis more
  -- (it looks each one up in its node). The trim is approximate ('~'): it drops whole
  -- nodes of the stream (stream-node-max-entries / -bytes) below the bound and leaves
  -- the rest of a node the bound falls in, acknowledged entries no one reads again (a
  -- claim reads past the group's last delivered entry), for a later call: marking
  -- entries deleted one by one inside a node cost more than the rest of the trim.
  local bound, held = nil, false
  local first = redis.call('XPENDING', KEYS[1], GROUP, '-', '+', 1)[1]
  if first and later(first[1], newest) == newest then -- pending before it (never it: acked)
    bound = first[1]
    if ms_of(bound) < ms_of(newest) - LINGER then
      -- A task long running (or a lease to reclaim) holds the trim back: the entries
      -- finished here are deleted one by one, so that no more than LINGER's worth of
      -- finished entries wait behind it.
      redis.call('XDEL', KEYS[1], unpack(gone))
      held = true
    end
  else
    local dash = string.find(newest, '-', 1, true)
    bound = string.sub(newest, 1, dash) .. (tonumber(string.sub(newest, dash + 1)) + 1)
  end
  redis.call('XTRIM', KEYS[1], 'MINID', '~', bound)
  -- While it is held, every call trims (and deletes its entries): the entries finished
  -- by calls that did not trim before it was seen wait, at most TRIM_EVERY per state.
  if held then
    redis.call('SET', KEYS[11], '1')
  elseif flagged then
    redis.call('DEL', KEYS[11])
  end
end
if #done > 0 then redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', unpack(done)) end
for i, carried in pairs(notices) do
  -- NOMKSTREAM: the client opened its stream before it submitted, and deletes it when it
  -- closes; a client gone is sent nothing (the outcomes are in the records all the same).
  redis.call('XADD', KEYS[i], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[3], '*', unpack(carried))
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return codes
