-- Retires finished tasks of an apalis-redis 1.0.0 queue: their payload is
-- dropped at once, their id is remembered for the idempotency TTL, then
-- forgotten. apalis-redis keeps every finished task's payload and metadata
-- and never trims its done set; its vacuum forgets ids at once, so a
-- redelivery of a finished event would be queued again.
--
-- The push script (push_events.lua) treats an id present in the data hash as
-- a duplicate, so the remembered id is an empty value in that hash; the
-- remembered set orders ids by the time they were retired.
--
-- KEYS[1] task data hash  (Q:data)
-- KEYS[2] done set        (Q:done)
-- KEYS[3] task metadata prefix (Q:meta)
-- KEYS[4] remembered ids, scored by retirement time (Q:remembered)
-- ARGV[1] now, in seconds; ARGV[2] idempotency TTL, in seconds;
-- ARGV[3] most ids handled per step (keeps unpack() and the call short)
-- Returns { tasks retired, ids forgotten }.

local now = tonumber(ARGV[1])
local slice = tonumber(ARGV[3])

local done = redis.call('SPOP', KEYS[2], slice)
if #done > 0 then
    local scored = {}
    for _, id in ipairs(done) do
        redis.call('HSET', KEYS[1], id, '')
        redis.call('DEL', KEYS[3] .. ':' .. id)
        scored[#scored + 1] = now
        scored[#scored + 1] = id
    end
    redis.call('ZADD', KEYS[4], unpack(scored))
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[2]),
    'LIMIT', 0, slice)
if #expired > 0 then
    redis.call('HDEL', KEYS[1], unpack(expired))
    redis.call('ZREM', KEYS[4], unpack(expired))
end

return { #done, #expired }
