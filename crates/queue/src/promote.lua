-- Moves due tasks from the scheduled set to the active list, at most ARGV[2]
-- per call. apalis-redis's own fetch promotes *every* due task with one
-- unpack(), which Redis's Lua refuses past ~8,000 values: consumption then
-- stops for good. Promoting in bounded slices first keeps the due set small.
--
-- KEYS[1] scheduled set (Q:scheduled), KEYS[2] active list (Q:active),
-- KEYS[3] signal list (Q:signal)
-- ARGV[1] now, in seconds (apalis-redis's score unit); ARGV[2] slice size
-- Returns the number of tasks promoted.

local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then
    return 0
end
redis.call('RPUSH', KEYS[2], unpack(ids))
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('DEL', KEYS[3])
redis.call('LPUSH', KEYS[3], 1)
return #ids
