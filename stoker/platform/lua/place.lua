-- place.lua: place a batch of intake entries on nodes, atomically with their ack.
--
-- KEYS[1]  {p}:intake:sync      stream (consumer group ARGV[2])
-- KEYS[2]  {p}:intake:async     stream (consumer group ARGV[2])
-- KEYS[3]  {p}:conc             hash function -> events placed and unfinished; "*" = all
-- KEYS[4]  {p}:nodes            zset node_id -> last heartbeat (ms)
-- KEYS[5]  {p}:waiting          set of functions with held-back async events
-- ARGV[1]  prefix               (node, inbox, fn and waiting keys are built from it)
-- ARGV[2]  consumer group of the intake streams
-- ARGV[3]  now (ms)
-- ARGV[4]  a node is alive if its heartbeat is newer than now - ARGV[4] (ms)
-- ARGV[5]  global concurrency limit
-- ARGV[6]  prefetch: async events a node may hold per slot, unless the node says (field prefetch)
-- ARGV[7..] five per entry: entry id, invocation id, "function:version", type (s|a), envelope
--          (an empty entry id places an event that is in no intake stream: a gateway placing
--          a sync call directly; nothing is acked, and F or N means "send it to intake")
--
-- Returns one result per entry:
--   node_id   placed on that node (in its inbox), acked from intake
--   "T"       sync call over a concurrency limit: throttled, acked (the caller answers it)
--   "W"       async event over a concurrency limit: moved to {p}:waiting:{function}, acked
--   "F"       async event and every node is full: not acked, the scheduler retries it
--   "N"       no live node: not acked, the scheduler retries it
--   "D"       already acked by another scheduler: nothing done
local prefix, group = ARGV[1], ARGV[2]
local now, dead_after = tonumber(ARGV[3]), tonumber(ARGV[4])
local global_limit, prefetch = tonumber(ARGV[5]), tonumber(ARGV[6])

local live = redis.call('ZRANGEBYSCORE', KEYS[4], now - dead_after, '+inf')
local nodes = {}
for _, id in ipairs(live) do
  local h = redis.call('HMGET', prefix .. ':node:' .. id, 'slots', 'load', 'prefetch')
  if h[1] then
    nodes[#nodes + 1] = {id = id, slots = tonumber(h[1]), load = tonumber(h[2] or '0') or 0, idle = {},
                         prefetch = tonumber(h[3] or '') or prefetch}
  end
end

local function idle_of(node, fv)
  local v = node.idle[fv]
  if v == nil then
    v = tonumber(redis.call('HGET', prefix .. ':node:' .. node.id .. ':idle', fv) or '0') or 0
    node.idle[fv] = v
  end
  return v
end

-- the node with an unreserved idle warm worker for fv (least loaded), else the least
-- loaded node with a free slot (it will cold-start), else for sync the least loaded
-- node at all and for async one under its prefetch bound
local function choose(fv, sync)
  local best, best_load = nil, nil
  for _, n in ipairs(nodes) do
    if idle_of(n, fv) > 0 then
      local l = n.load / n.slots
      if best == nil or l < best_load then best, best_load = n, l end
    end
  end
  if best then return best, true end
  for _, n in ipairs(nodes) do
    if n.load < n.slots then
      local l = n.load / n.slots
      if best == nil or l < best_load then best, best_load = n, l end
    end
  end
  if best then return best, false end
  for _, n in ipairs(nodes) do
    if sync or n.load < n.slots * n.prefetch then
      local l = n.load / n.slots
      if best == nil or l < best_load then best, best_load = n, l end
    end
  end
  return best, false
end

local global = tonumber(redis.call('HGET', KEYS[3], '*') or '0') or 0
local limits, counts, full = {}, {}, {}

-- take the entry off its intake stream; false when another scheduler already did
local function acked(stream, entry)
  if entry == '' then return true end
  if redis.call('XACK', stream, group, entry) == 0 then return false end
  redis.call('XDEL', stream, entry)
  return true
end
local results = {}
for i = 7, #ARGV, 5 do
  local entry, inv, fv, typ, env = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local stream = (typ == 's') and KEYS[1] or KEYS[2]
  local fname = string.match(fv, '^(.*):[^:]*$') or fv
  if limits[fname] == nil then
    limits[fname] = tonumber(redis.call('HGET', prefix .. ':fn:' .. fname, 'concurrency') or '') or false
    counts[fname] = tonumber(redis.call('HGET', KEYS[3], fname) or '0') or 0
  end
  local limit = limits[fname]
  local result
  if (limit and counts[fname] >= limit) or global >= global_limit then
    if not acked(stream, entry) then
      result = 'D'
    else
      if typ == 's' then
        result = 'T'
      else
        redis.call('RPUSH', prefix .. ':waiting:' .. fname, cmsgpack.pack({inv, fv, typ, env}))
        redis.call('SADD', KEYS[5], fname)
        result = 'W'
      end
    end
  elseif #nodes == 0 then
    result = 'N'
  elseif typ ~= 's' and full[fv] then
    result = 'F'  -- an earlier event of this version found no room: neither will this one
  else
    local node, reserved = choose(fv, typ == 's')
    if node == nil then
      result = 'F'
      full[fv] = true
    elseif not acked(stream, entry) then
      result = 'D'
    else
      redis.call('XADD', prefix .. ':inbox:' .. node.id, '*', 'i', inv, 'f', fv, 't', typ, 'e', env,
                 'w', reserved and '1' or '0')
      redis.call('HINCRBY', prefix .. ':node:' .. node.id, 'load', 1)
      node.load = node.load + 1
      if reserved then
        redis.call('HINCRBY', prefix .. ':node:' .. node.id .. ':idle', fv, -1)
        node.idle[fv] = node.idle[fv] - 1
      end
      redis.call('HINCRBY', KEYS[3], fname, 1)
      redis.call('HINCRBY', KEYS[3], '*', 1)
      counts[fname] = counts[fname] + 1
      global = global + 1
      result = node.id
    end
  end
  results[#results + 1] = result
end
return results
