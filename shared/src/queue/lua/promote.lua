-- Moves due deliveries from the delayed set to their ready lists, at most ARGV[2] per call, so
-- a large backlog never overflows Lua's unpack limit.
-- KEYS[1] delayed zset, KEYS[2] ring, KEYS[3] signal;
-- ARGV[1] now (ms), ARGV[2] batch size, ARGV[3] ready-list prefix.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(due))
for _, payload in ipairs(due) do
  route(KEYS[2], ARGV[3], payload, false)
end
wake(KEYS[3], #due)
return #due
