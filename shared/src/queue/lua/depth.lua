-- Deliveries waiting: {ready, delayed}.
-- KEYS[1] ring, KEYS[2] delayed; ARGV[1] ready-list prefix.
local ready = 0
for _, tenant in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  ready = ready + redis.call('LLEN', ARGV[1] .. 'manual:' .. tenant)
    + redis.call('LLEN', ARGV[1] .. 'scheduled:' .. tenant)
end
return {ready, redis.call('ZCARD', KEYS[2])}
