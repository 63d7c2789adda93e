-- Take a start on a rate limit (GCRA with bookings; `LocalRates` and `take_for_task` in
-- queueing/_ratelimit.py are the same steps in Python). Redis's own clock (TIME) is the
-- one every process shares.
-- KEYS: 1 the key's times (hash: b its next free booking, or start without bookings; a its
-- next free start by the starts made, with bookings), 2 the queue's rate figures (hash:
-- limit, per, w the current window, cur and prev its and the previous window's starts,
-- started all starts), 3 the start booked for the task (string)
-- ARGV: 1 interval between starts (us), 2 within (us), 3 the limit's period (us), 4 the
-- limit as text ("100/s"), 5 '1' if KEYS[3] names a task (bookings), else '0', 6 the
-- slack of the starts made (us), 7 how long (ms) a booking is kept past its time
-- Times are microseconds. Returns the microseconds until the start: taken (and counted)
-- when that is at most `within`; further off, kept booked for the task with ARGV[5] =
-- '1', else nothing changed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local within = tonumber(ARGV[2])

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

local function store(b, a)
  local last = b
  if a and a > last then
    last = a
  end
  redis.call('HSET', KEYS[1], 'b', string.format('%d', b))
  if a then
    redis.call('HSET', KEYS[1], 'a', string.format('%d', a))
  end
  redis.call('PEXPIRE', KEYS[1], math.floor((last - now) / 1000) + 1000)
end

local f = redis.call('HMGET', KEYS[1], 'b', 'a')
local next_booking = tonumber(f[1] or '')
local next_start = tonumber(f[2] or '')

if ARGV[5] ~= '1' then
  -- Without bookings: the key's next free start, taken if it is due within `within`.
  local start = now
  if next_booking and next_booking > now then
    start = next_booking
  end
  local wait = start - now
  if wait <= within then
    store(start + interval, nil)
    count()
  end
  return wait
end

-- With bookings: the task's own, or the key's next free one (booked for it now).
local booked = tonumber(redis.call('GET', KEYS[3]) or '')
if not booked then
  booked = now
  if next_booking and next_booking > now then
    booked = next_booking
  end
  next_booking = booked + interval
end
-- Its start also waits for the limiter of the starts made (late ones must not bunch up).
local due = booked
if next_start and next_start - tonumber(ARGV[6]) > due then
  due = next_start - tonumber(ARGV[6])
end
local wait = due - now
if wait > within then
  store(next_booking, next_start)
  redis.call('SET', KEYS[3], string.format('%d', booked), 'PX',
    math.floor((booked - now) / 1000) + tonumber(ARGV[7]))
  return wait
end
local at = due
if at < now then
  at = now
end
if not next_start or next_start < at then
  next_start = at
end
store(next_booking, next_start + interval)
redis.call('DEL', KEYS[3])
count()
if wait < 0 then
  return 0
end
return wait
