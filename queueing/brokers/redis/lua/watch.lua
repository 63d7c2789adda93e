-- Keep a queue's `done` stream while a client reads it: `finish.lua` writes its notices
-- only while the stream exists (no one reads it, the common case: no XADD per outcome call,
-- about 3k instructions per task). A reader calls this before it reads where the stream
-- stands and the records it waits on (an outcome recorded before is in its record, one
-- recorded after is in the stream), and again while it reads: the stream goes with its
-- TTL once no one calls (a reader that let it lapse looks at every record it waits on).
-- KEYS: 1 the done stream
-- ARGV: 1 how long it is kept from now (ms)
-- Returns 1 if the stream was made here (it did not exist), else 0.
local made = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- An empty stream (an entry added and trimmed at once: no reader sees it).
  redis.call('XADD', KEYS[1], '*', 'id', '')
  redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
  made = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return made
