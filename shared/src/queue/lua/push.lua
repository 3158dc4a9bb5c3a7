-- Makes deliveries ready and marks their jobs pending.
-- KEYS[1] ring, KEYS[2] signal, KEYS[3] pending; ARGV[1] ready-list prefix, ARGV[2..] deliveries.
local ids = {}
for i = 2, #ARGV do
  route(KEYS[1], ARGV[1], ARGV[i], false)
  ids[#ids + 1] = string.match(ARGV[i], '^[^|]*')
end
if #ids > 0 then
  redis.call('SADD', KEYS[3], unpack(ids))
end
wake(KEYS[2], #ids)
return #ids
