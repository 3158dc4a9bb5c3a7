-- Takes the next delivery for a worker: from the tenant at the head of the ring (served least
-- recently), its manual list first, else its scheduled one; the tenant then moves to the back
-- of the ring, or leaves it when it has nothing more. The delivery lands in the worker's
-- claimed list in the same step, so it is always in exactly one place.
-- KEYS[1] ring, KEYS[2] signal, KEYS[3] claimed list, KEYS[4] the single FIFO list of the
-- queue before fair scheduling (its bare job ids come out as garbage, and their acknowledgement
-- lets the reconciler push them again, routed); ARGV[1] ready-list prefix.
-- Returns the delivery, or false when nothing is ready.
for _ = 1, 64 do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #head == 0 then
    break
  end
  local tenant = head[1]
  local manual = ARGV[1] .. 'manual:' .. tenant
  local scheduled = ARGV[1] .. 'scheduled:' .. tenant
  local delivery = redis.call('RPOP', manual)
  if not delivery then
    delivery = redis.call('RPOP', scheduled)
  end
  if redis.call('EXISTS', manual, scheduled) == 0 then
    redis.call('ZREM', KEYS[1], tenant)
  else
    ring_append(KEYS[1], tenant)
  end
  if delivery then
    redis.call('LPUSH', KEYS[3], delivery)
    if redis.call('EXISTS', KEYS[1]) == 0 then
      redis.call('DEL', KEYS[2])
    elseif redis.call('EXISTS', KEYS[2]) == 0 then
      -- More is ready: wake the next idle pickup.
      redis.call('LPUSH', KEYS[2], '1')
    end
    return delivery
  end
end
-- Nothing ready: any wake-up token left is stale.
redis.call('DEL', KEYS[2])
return redis.call('RPOPLPUSH', KEYS[4], KEYS[3])
