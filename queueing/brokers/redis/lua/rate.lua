-- Book a start on a rate limit (GCRA with bookings; LocalRates in queueing/_ratelimit.py
-- is the same algorithm in Python). Redis's own clock (TIME) is the one every process
-- shares.
-- KEYS: 1 the key's next free start (string, microseconds), 2 the queue's rate figures
-- (hash: limit, per, w the current window, cur and prev its and the previous window's
-- starts, started all starts), 3 the start booked for the task (string, microseconds)
-- ARGV: 1 interval between starts (us), 2 within (us), 3 the limit's period (us), 4 the
-- limit as text ("100/s"), 5 '1' if KEYS[3] names a task (book for it), else '0',
-- 6 how late (us) a task may come back for its booking and still use it, 7 how long (ms) a
-- booking is kept past that
-- Returns the microseconds until the start: taken (and counted) when that is at most
-- `within`; further off, booked for the task with ARGV[5] = '1', else nothing changed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local within = tonumber(ARGV[2])
local for_task = ARGV[5] == '1'

local function count()
  local window = math.floor(now / tonumber(ARGV[3]))
  local f = redis.call('HMGET', KEYS[2], 'w', 'cur')
  local w = tonumber(f[1] or '-1') or -1
  local cur = tonumber(f[2] or '0') or 0
  if w == window then
    redis.call('HSET', KEYS[2], 'cur', cur + 1)
  elseif w == window - 1 then
    redis.call('HSET', KEYS[2], 'w', window, 'prev', cur, 'cur', 1)
  else
    redis.call('HSET', KEYS[2], 'w', window, 'prev', 0, 'cur', 1)
  end
  redis.call('HSET', KEYS[2], 'limit', ARGV[4], 'per', ARGV[3])
  redis.call('HINCRBY', KEYS[2], 'started', 1)
end

if for_task then
  local booked = tonumber(redis.call('GET', KEYS[3]) or '')
  if booked then
    local wait = booked - now
    if wait > within then
      return wait
    end
    redis.call('DEL', KEYS[3])
    if -wait <= tonumber(ARGV[6]) then
      count()
      if wait < 0 then
        return 0
      end
      return wait
    end
    -- Too late to use (it could bunch up with the starts booked after it): books anew.
  end
end

local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then
  tat = now
end
local wait = tat - now
if wait > within and not for_task then
  return wait
end
local nxt = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.floor((nxt - now) / 1000) + 1000)
if wait <= within then
  count()
else
  redis.call('SET', KEYS[3], string.format('%d', tat), 'PX',
    math.floor((wait + tonumber(ARGV[6])) / 1000) + tonumber(ARGV[7]))
end
return wait
