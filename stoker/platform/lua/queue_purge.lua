-- queue_purge.lua: delete every message of a queue, in flight and delayed ones included.
--
-- KEYS[1]  {p}:queue:{q}            stream (consumer group ARGV[1])
-- KEYS[2]  {p}:queue:{q}:delayed    zset
-- KEYS[3]  {p}:queue:{q}:received   hash
-- ARGV[1]  consumer group
--
-- The stream itself stays (so entry ids keep growing) and its group is recreated empty,
-- which voids the receipts of batches in flight: their acks then change nothing.
-- Returns the number of messages deleted.
local stream, delayed, received, group = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local n = redis.call('XLEN', stream) + redis.call('ZCARD', delayed)
if redis.call('EXISTS', stream) == 1 then
  redis.call('XTRIM', stream, 'MAXLEN', 0)
  if redis.pcall('XGROUP', 'DESTROY', stream, group) == 1 then
    redis.call('XGROUP', 'CREATE', stream, group, '$')
  end
end
redis.call('DEL', delayed, received)
return n
