-- queue_lease.lua: take one of N leases (batches in flight of one event source mapping,
-- across every trigger runner).
--
-- KEYS[1]  {p}:esm:{binding}:leases   zset lease token -> expiry (ms)
-- ARGV[1]  now (ms)   ARGV[2]  N   ARGV[3]  token   ARGV[4]  expiry (ms)
-- Leases of a runner that died expire by themselves. Returns 1 if taken, else 0.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  -- the key itself outlives any lease (it is only cleanup for mappings that are gone)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) - tonumber(ARGV[1]) + 60000)
  return 1
end
return 0
