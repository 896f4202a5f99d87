-- lease_hold.lua: take a lease, or renew it when this owner already holds it.
--
-- KEYS[1]  the lease ({p}:lock:{name}), a string holding the owner's token
-- ARGV[1]  the owner's token
-- ARGV[2]  time to live (ms)
-- Returns 1 when the caller holds the lease (taken or renewed), 0 when another owner does.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
