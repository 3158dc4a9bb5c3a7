-- Gives the deliveries of workers whose lease lapsed back to the ready list, at most ARGV[3]
-- workers per call. Claimed lists are named from the worker id; with the queue's hash tag they
-- share one cluster slot with KEYS.
-- KEYS[1] workers zset (score = lease expiry, ms), KEYS[2] ready list;
-- ARGV[1] now (ms), ARGV[2] claimed-list key prefix, ARGV[3] max workers.
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local moved = 0
for _, worker in ipairs(dead) do
  local claimed = ARGV[2] .. worker
  while redis.call('LMOVE', claimed, KEYS[2], 'RIGHT', 'RIGHT') do
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], worker)
end
return moved
