-- complete.lua: a node hands back finished work, atomically with the ack of its inbox entries.
--
-- KEYS[1]  {p}:conc          hash function -> events placed and unfinished; "*" = all
-- KEYS[2]  {p}:ledger        stream of ledger records
-- KEYS[3]  {p}:intake:async  stream (held-back events return here when a slot frees)
-- KEYS[4]  {p}:waiting       set of functions with held-back events
-- KEYS[5]  {p}:node:{id}     this node's hash (load)
-- KEYS[6]  {p}:node:{id}:idle  hash function:version -> unreserved idle warm workers
-- KEYS[7]  {p}:inbox:{id}    this node's inbox stream (consumer group ARGV[2])
-- KEYS[8]  {p}:delayed       zset of retries
-- KEYS[9]  {p}:capacity      stream: one entry per call that freed capacity (wakes schedulers)
-- KEYS[10] {p}:node:{id}:started  the entries this node started (start.lua)
-- ARGV[1]  prefix
-- ARGV[2]  consumer group of the inbox
-- ARGV[3]  the most log chunks kept per function (approximate trim)
-- ARGV[4..] thirteen per item:
--   inbox entry id ("" = none), function, function:version, idle-worker delta,
--   ledger record ("" = none), reply list ("" = none), reply,
--   log chunk ("" = none), action ("" | "retry" | "dlq"), action argument 1, action argument 2,
--   outcome stream ("" = none), outcome (msgpack)
--   retry: argument 1 = due (ms), argument 2 = delayed member
--   dlq:   argument 1 = dead-letter entry (msgpack), argument 2 = unused
--   outcome: a trigger that asked to hear of its event's final outcome gets it here
--
-- An item whose inbox entry is no longer pending (the node was declared dead and its
-- events placed again: the reclaim settled or re-ran them) is a late result: its logs are
-- kept, but it changes no ledger row, answers no caller, never releases capacity twice
-- and schedules no second retry. Returns the number of entries acked.
local prefix, group, log_max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local node_alive = redis.call('EXISTS', KEYS[5]) == 1
local any_waiting = redis.call('SCARD', KEYS[4]) > 0
local acked_total = 0
for i = 4, #ARGV, 13 do
  local entry, fname, fv, idle_delta = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local ledger, reply_key, reply, logs = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local action, arg1, arg2 = ARGV[i + 8], ARGV[i + 9], ARGV[i + 10]
  local notify, outcome = ARGV[i + 11], ARGV[i + 12]
  local owned = true
  if entry ~= '' then
    owned = redis.call('XACK', KEYS[7], group, entry) == 1
    redis.call('XDEL', KEYS[7], entry)
    redis.call('SREM', KEYS[10], entry)
    if owned then
      acked_total = acked_total + 1
      if node_alive then redis.call('HINCRBY', KEYS[5], 'load', -1) end
      redis.call('HINCRBY', KEYS[1], fname, -1)
      redis.call('HINCRBY', KEYS[1], '*', -1)
      -- a slot freed: one held-back event goes back to intake, this function's first
      local src = any_waiting and fname or nil
      if src and redis.call('LLEN', prefix .. ':waiting:' .. src) == 0 then
        src = redis.call('SRANDMEMBER', KEYS[4])
      end
      if src then
        local m = redis.call('LPOP', prefix .. ':waiting:' .. src)
        if m then
          local t = cmsgpack.unpack(m)
          redis.call('XADD', KEYS[3], '*', 'i', t[1], 'f', t[2], 't', t[3], 'e', t[4])
        end
        if redis.call('LLEN', prefix .. ':waiting:' .. src) == 0 then redis.call('SREM', KEYS[4], src) end
      end
    end
  end
  if idle_delta ~= 0 and node_alive then
    local v = redis.call('HINCRBY', KEYS[6], fv, idle_delta)
    if v <= 0 then redis.call('HDEL', KEYS[6], fv) end
  end
  if owned and ledger ~= '' then redis.call('XADD', KEYS[2], '*', 'r', ledger) end
  if owned and reply_key ~= '' then
    redis.call('RPUSH', reply_key, reply)
    redis.call('PEXPIRE', reply_key, 120000)
  end
  if logs ~= '' then
    redis.call('XADD', prefix .. ':logs:' .. fname, 'MAXLEN', '~', log_max, '*', 'l', logs)
  end
  if owned and action == 'retry' then
    redis.call('ZADD', KEYS[8], tonumber(arg1), arg2)
  elseif owned and action == 'dlq' then
    redis.call('XADD', prefix .. ':dlq:' .. fname, '*', 'd', arg1)
  end
  if owned and notify ~= '' then
    redis.call('XADD', notify, 'MAXLEN', '~', 100000, '*', 'o', outcome)
  end
end
if acked_total > 0 then
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', 100, '*', 'n', acked_total)
end
return acked_total
