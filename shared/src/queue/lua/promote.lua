-- Moves due deliveries from the delayed set to the ready list, at most ARGV[2] per call, so a
-- large backlog never overflows Lua's unpack limit (apalis-redis 1.0's fetch_next.lua does).
-- KEYS[1] delayed zset, KEYS[2] ready list; ARGV[1] now (ms), ARGV[2] batch size.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(due))
redis.call('LPUSH', KEYS[2], unpack(due))
return #due
