-- drain.lua: give held-back async events another chance when their function has room.
-- (complete.lua moves one per finished event; this catches limits raised by a deploy
-- and events held while no capacity was ever released.)
--
-- KEYS[1]  {p}:waiting        set of functions with held-back events
-- KEYS[2]  {p}:conc           hash function -> events placed and unfinished; "*" = all
-- KEYS[3]  {p}:intake:async   stream
-- ARGV[1]  prefix
-- ARGV[2]  global concurrency limit
-- ARGV[3]  at most this many per function
-- Returns the number moved.
local prefix, global_limit, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local global = tonumber(redis.call('HGET', KEYS[2], '*') or '0') or 0
local n = 0
for _, fname in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local wkey = prefix .. ':waiting:' .. fname
  local limit = tonumber(redis.call('HGET', prefix .. ':fn:' .. fname, 'concurrency') or '')
  local room = global_limit - global
  if limit then
    room = math.min(room, limit - (tonumber(redis.call('HGET', KEYS[2], fname) or '0') or 0))
  end
  room = math.min(room, most)
  while room > 0 do
    local m = redis.call('LPOP', wkey)
    if not m then break end
    local t = cmsgpack.unpack(m)
    redis.call('XADD', KEYS[3], '*', 'i', t[1], 'f', t[2], 't', t[3], 'e', t[4])
    room = room - 1
    n = n + 1
  end
  if redis.call('LLEN', wkey) == 0 then redis.call('SREM', KEYS[1], fname) end
end
return n
