-- promote.lua: move retries that are due from the delayed set back to intake.
--
-- KEYS[1]  {p}:delayed        zset, member = msgpack [id, function:version, type, envelope], score = due (ms)
-- KEYS[2]  {p}:intake:sync    stream
-- KEYS[3]  {p}:intake:async   stream
-- ARGV[1]  now (ms)
-- ARGV[2]  at most this many
-- Returns the number moved. ZREM decides, so two schedulers never move one retry twice.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, m in ipairs(due) do
  if redis.call('ZREM', KEYS[1], m) == 1 then
    local t = cmsgpack.unpack(m)
    local stream = (t[3] == 's') and KEYS[2] or KEYS[3]
    redis.call('XADD', stream, '*', 'i', t[1], 'f', t[2], 't', t[3], 'e', t[4])
    n = n + 1
  end
end
return n
