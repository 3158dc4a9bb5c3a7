-- Gives the deliveries of workers whose lease lapsed back to the front of their ready lists, at
-- most ARGV[3] workers per call. Claimed lists are named from the worker id; with the queue's
-- hash tag they share one cluster slot with KEYS.
-- KEYS[1] workers zset (score = lease expiry, ms), KEYS[2] ring, KEYS[3] signal,
-- KEYS[4] worker-info hash;
-- ARGV[1] cutoff (ms), ARGV[2] claimed-list key prefix, ARGV[3] max workers,
-- ARGV[4] ready-list prefix. Returns {workers reaped, deliveries moved}.
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local moved = 0
for _, worker in ipairs(dead) do
  local claimed = ARGV[2] .. worker
  while true do
    local payload = redis.call('RPOP', claimed)
    if not payload then
      break
    end
    route(KEYS[2], ARGV[4], payload, true)
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], worker)
  redis.call('HDEL', KEYS[4], worker)
end
wake(KEYS[3], moved)
return {#dead, moved}
