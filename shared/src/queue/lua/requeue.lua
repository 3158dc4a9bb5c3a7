-- Moves the given deliveries from a worker's claimed list back to the front of their ready
-- lists (each only if it is still there), for the audit of stale claimed deliveries.
-- KEYS[1] claimed list, KEYS[2] ring, KEYS[3] signal; ARGV[1] ready-list prefix,
-- ARGV[2..] deliveries. Returns how many moved.
local moved = 0
for i = 2, #ARGV do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    route(KEYS[2], ARGV[1], ARGV[i], true)
    moved = moved + 1
  end
end
wake(KEYS[3], moved)
return moved
