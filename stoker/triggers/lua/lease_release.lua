-- lease_release.lua: give a lease up, only if the caller still holds it.
--
-- KEYS[1]  the lease ({p}:lock:{name})
-- ARGV[1]  the owner's token
-- Returns 1 when released, 0 when another owner holds it (or nobody).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
