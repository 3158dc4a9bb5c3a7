-- Prepended to every script that makes deliveries ready. A delivery is
-- `<job id>|<class>|<tenant>` (class `manual` or `scheduled`); it goes to its tenant's list of
-- its class, `<ready prefix><class>:<tenant>`, and the tenant joins the ring of tenants with
-- ready work, at the back, unless it is in it already. The ring is a sorted set whose scores
-- only grow, so the tenant served least recently is always first.

local function ring_append(ring, tenant)
  local last = redis.call('ZRANGE', ring, -1, -1, 'WITHSCORES')
  local score = 0
  if #last > 0 then
    score = tonumber(last[2]) + 1
  end
  redis.call('ZADD', ring, score, tenant)
end

-- Makes one delivery ready: at the back of its list, or at the front (`front`, for deliveries
-- taken back from a worker, which were due first).
local function route(ring, prefix, payload, front)
  local class, tenant = string.match(payload, '^[^|]*|([^|]*)|(.*)$')
  if class ~= 'scheduled' then
    class = 'manual'
  end
  tenant = tenant or ''
  local list = prefix .. class .. ':' .. tenant
  if front then
    redis.call('RPUSH', list, payload)
  else
    redis.call('LPUSH', list, payload)
  end
  if not redis.call('ZSCORE', ring, tenant) then
    ring_append(ring, tenant)
  end
end

-- Wakes up to `n` blocked pickups (at most 64: each woken pickup that finds more work wakes
-- the next one).
local function wake(signal, n)
  if n <= 0 then
    return
  end
  if n > 64 then
    n = 64
  end
  local tokens = {}
  for i = 1, n do
    tokens[i] = '1'
  end
  redis.call('LPUSH', signal, unpack(tokens))
  redis.call('LTRIM', signal, 0, 63)
end
