-- reclaim.lua: a node stopped heart-beating; give everything it held back to intake.
--
-- KEYS[1]  {p}:nodes           zset node_id -> last heartbeat (ms)
-- KEYS[2]  {p}:node:{id}       the dead node's hash
-- KEYS[3]  {p}:node:{id}:idle  its idle-worker hash
-- KEYS[4]  {p}:inbox:{id}      its inbox stream (consumer group ARGV[2])
-- KEYS[5]  {p}:intake:sync     stream
-- KEYS[6]  {p}:intake:async    stream
-- KEYS[7]  {p}:conc            hash function -> events placed and unfinished
-- KEYS[8]  {p}:capacity        stream that wakes schedulers holding events (capacity freed)
-- KEYS[9]  {p}:node:{id}:started  set of the entries the node started (start.lua)
-- ARGV[1]  node id
-- ARGV[2]  consumer group of the inbox
-- ARGV[3]  cutoff (ms): the node is dead if its last heartbeat is older
-- ARGV[4..] entry ids the node knows it never started (a node giving its work back at
--          shutdown passes them, so they do not count as a spent attempt)
--
-- Entries the node had started go back marked r=interrupted (an attempt was spent); every
-- other one (never read, or read and waiting for a worker) goes back marked r=unstarted,
-- to be placed again as it was. Capacity the node held is released. Atomic, so a node is
-- reclaimed once however many schedulers try, and a node that was only stalled can start
-- nothing of what it held once this ran (start.lua checks its registration).
-- Returns the number of entries given back, or -1 when the node is not dead.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) >= tonumber(ARGV[3]) then return -1 end
local unstarted = {}
for i = 4, #ARGV do unstarted[ARGV[i]] = true end
local started = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[9])) do started[id] = true end
local n = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[4], '-', '+')) do
  local f = {}
  for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j + 1] end
  -- t=w is a request to start a warm worker (min_warm), not an event: the scheduler
  -- asks another node in its next round, so it is simply dropped here
  if f['t'] ~= 'w' then
    local stream = (f['t'] == 's') and KEYS[5] or KEYS[6]
    redis.call('XADD', stream, '*', 'i', f['i'], 'f', f['f'], 't', f['t'], 'e', f['e'],
               'r', (started[e[1]] and not unstarted[e[1]]) and 'interrupted' or 'unstarted')
    local fname = string.match(f['f'], '^(.*):[^:]*$') or f['f']
    redis.call('HINCRBY', KEYS[7], fname, -1)
    redis.call('HINCRBY', KEYS[7], '*', -1)
    n = n + 1
  end
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[9])
redis.call('ZREM', KEYS[1], ARGV[1])
if n > 0 then redis.call('XADD', KEYS[8], 'MAXLEN', '~', 100, '*', 'n', n) end
return n
