-- Fleet-wide sliding-window log for one HubSpot portal (docs/adr/0004).
--
-- KEYS[1]  sorted set: one member per granted permit, scored by Redis time (µs)
-- KEYS[2]  pause flag: set after a 429, blocks every replica until it expires
-- ARGV[1]  window in µs (HubSpot's window plus a safety margin)
-- ARGV[2]  permits allowed in the window for this caller's priority
-- ARGV[3]  a member id unique to this request
--
-- Returns 0 when a permit was granted, otherwise the µs to wait before asking
-- again. Redis's own clock is the only clock, so replicas with skewed clocks
-- still share one timeline.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return paused * 1000
end

local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end

-- The permit frees up when enough of the oldest entries have left the window
-- for the count to drop below this priority's limit.
local idx = count - limit
local entry = redis.call('ZRANGE', KEYS[1], idx, idx, 'WITHSCORES')
local wait = tonumber(entry[2]) + window - now
if wait < 1 then
  wait = 1
end
return wait
