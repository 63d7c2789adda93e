-- Ready-stream entries that say themselves that they are live, shared by the scripts that
-- write a task's entry: loaded in front of each (see `_calls.PRELUDES`).
--
-- An entry written here gets its id chosen by the script (XADD with an explicit id) and
-- carries it in its field `x`: '<its own entry id> <the submitting client>' (the client
-- may be ''), beside `env` (no `id` field: the envelope has the task id). A copy of the entry (XADD '*' of its fields: forged, or stale) gets another
-- id, and no XADD can give an id the stream had before (ids only grow): an entry whose
-- `x` starts with its own id is the entry written for its task, live as long as it is
-- in the stream (every script that makes a record name another entry, or none, deletes
-- the old one). Readers need no lookup for it; any other entry is checked against its
-- task's record (check.lua) or `live` (written for entries without `x`).
--
-- The first id of a call: this millisecond, sequence 1000 per microsecond within it, so
-- that it comes after the ids every earlier call gave (a call lasts more than a
-- microsecond; fewer than 1000 entries are added per microsecond); the next ones follow
-- it. If the stream has a later id (a clock set back), XADD '*' writes the entry without
-- `x` (named in `live` by the caller), and the next ones follow that.
local entry_ms, entry_seq = nil, nil

-- `id` may be nil: then it is KEYS[key] after its first `from` characters (made only if
-- needed).
local function add_entry(ready, id, env, client, key, from)
  if not entry_ms then
    local t = redis.call('TIME')
    local us = tonumber(t[2])
    entry_ms = t[1] .. string.format('%03d', math.floor(us / 1000))
    entry_seq = (us % 1000) * 1000
  else
    entry_seq = entry_seq + 1
  end
  local entry = string.format('%s-%d', entry_ms, entry_seq)
  local ok = redis.pcall('XADD', KEYS[ready], entry, 'env', env, 'x', entry .. ' ' .. client)
  if type(ok) == 'table' and ok.err then
    id = id or string.sub(KEYS[key], from + 1)
    entry = redis.call('XADD', KEYS[ready], '*', 'id', id, 'env', env)
    local dash = string.find(entry, '-', 1, true)
    entry_ms = string.sub(entry, 1, dash - 1)
    entry_seq = tonumber(string.sub(entry, dash + 1))
    return entry, false
  end
  return entry, true
end

-- The submitting client of an entry read (its id, its fields flat) if its `x` shows it
-- live; else what `live` names (nil for none).
local function owner_of(entry, fields, named)
  if named then return named end
  for j = #fields - 1, 1, -2 do
    if fields[j] == 'x' then
      local x = fields[j + 1]
      if string.sub(x, 1, #entry + 1) == entry .. ' ' then return string.sub(x, #entry + 2) end
      return nil
    end
  end
  return nil
end
