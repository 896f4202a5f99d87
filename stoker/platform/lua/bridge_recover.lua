-- bridge_recover.lua: give the items a bridge instance was handling back to their list.
--
-- KEYS[1]  {p}:bridge:{kind}:{queue}:instances          zset instance -> last heartbeat (ms)
-- KEYS[2]  {p}:bridge:{kind}:{queue}:processing:{inst}  the instance's processing list (newest left)
-- KEYS[3]  the source list (the Celery queue, the RQ queue)
-- ARGV[1]  instance
-- ARGV[2]  "alive" cutoff (ms): an instance with a newer heartbeat is left alone; "+inf"
--          hands back unconditionally (the instance itself, stopping)
-- ARGV[3]  the side consumers pop from (RIGHT for Celery's lists, LEFT for RQ's), so that
--          the items go back to the head of the list, oldest first in line
-- Returns the number of items handed back, or -1 if the instance is alive.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[2] ~= '+inf' and score and tonumber(score) >= tonumber(ARGV[2]) then
  return -1
end
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', ARGV[3]) do
  n = n + 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
return n
