-- queue_receive.lua: receive up to N messages of a named queue for one consumer.
--
-- KEYS[1]  {p}:queue:{q}            stream of messages (consumer group ARGV[1])
-- KEYS[2]  {p}:queue:{q}:delayed    zset, member = msgpack [field, value, ...], score = due (ms)
-- KEYS[3]  {p}:queue:{q}:received   hash stream entry id -> first receive (ms)
-- KEYS[4]  {p}:queue:{q}-dlq        stream: the queue's dead-letter queue
-- KEYS[5]  {p}:queues               set of queue names
-- ARGV[1]  consumer group           ARGV[2]  consumer
-- ARGV[3]  at most this many        ARGV[4]  visibility timeout (ms)
-- ARGV[5]  max receives             ARGV[6]  now (ms)
-- ARGV[7]  the queue's name         ARGV[8]  its dead-letter queue's name
-- ARGV[9]  byte budget: stop receiving once the messages received add up to this many
--          bytes (a batch must fit one invocation; the last chunk may pass it a little)
--
-- In one step: delayed messages that are due join the stream; messages in flight for
-- longer than the visibility timeout are received again (their delivery count is the
-- receive count), unless they were already received max-receives times, in which case
-- they move to the dead-letter queue (with dq = source queue, dr = receive count,
-- dt = when); then new messages fill the rest.
--
-- Returns {dead_lettered, last_delivered_id, next_due_ms, entries...}; each entry is
-- {entry id, receive count, first receive (ms), {field, value, ...}}. last_delivered_id
-- and next_due_ms are "" when the batch is full (else the caller may wait on them).
local stream, delayed, received, dlq, queues = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer = ARGV[1], ARGV[2]
local want, vis, max_receive, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local budget, used = tonumber(ARGV[9]), 0
local RECORD_OVERHEAD = 512 -- the record's other fields, roughly

local function size_of(fields)
  local n = RECORD_OVERHEAD
  for i = 2, #fields, 2 do n = n + #fields[i] end
  return n
end

redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM') -- BUSYGROUP when it exists

local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
for _, member in ipairs(due) do
  redis.call('ZREM', delayed, member)
  redis.call('XADD', stream, '*', unpack(cmsgpack.unpack(member)))
end

local out, moved = {}, 0
local expired = redis.call('XPENDING', stream, group, 'IDLE', vis, '-', '+', want)
for _, p in ipairs(expired) do
  local id, deliveries = p[1], tonumber(p[4])
  local entry = redis.call('XRANGE', stream, id, id)
  if #entry == 0 then -- purged while in flight
    redis.call('XACK', stream, group, id)
    redis.call('HDEL', received, id)
  elseif deliveries >= max_receive then
    local fields, kept = entry[1][2], {}
    for i = 1, #fields, 2 do
      local k = fields[i]
      if k ~= 'dq' and k ~= 'dr' and k ~= 'dt' then
        kept[#kept + 1] = k
        kept[#kept + 1] = fields[i + 1]
      end
    end
    kept[#kept + 1] = 'dq'; kept[#kept + 1] = ARGV[7]
    kept[#kept + 1] = 'dr'; kept[#kept + 1] = tostring(deliveries)
    kept[#kept + 1] = 'dt'; kept[#kept + 1] = ARGV[6]
    redis.call('XADD', dlq, '*', unpack(kept))
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    redis.call('HDEL', received, id)
    redis.call('SADD', queues, ARGV[8])
    moved = moved + 1
  elseif used < budget then
    local claimed = redis.call('XCLAIM', stream, group, consumer, vis, id)
    if #claimed > 0 and claimed[1] then
      out[#out + 1] = {id, deliveries + 1, 0, claimed[1][2]}
      used = used + size_of(claimed[1][2])
    end
  end
end

-- new messages, in chunks sized by what the budget still holds
while #out < want and used < budget do
  local chunk = 1 -- a first look at how big messages are
  if #out > 0 then
    chunk = math.max(1, math.min(want - #out, math.floor((budget - used) / math.max(1, used / #out))))
  end
  local fresh = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', chunk, 'STREAMS', stream, '>')
  if not fresh or not fresh[1] or #fresh[1][2] == 0 then break end
  for _, e in ipairs(fresh[1][2]) do
    out[#out + 1] = {e[1], 1, 0, e[2]}
    used = used + size_of(e[2])
  end
end

for _, e in ipairs(out) do
  redis.call('HSETNX', received, e[1], ARGV[6])
  e[3] = tonumber(redis.call('HGET', received, e[1]))
end

local last_delivered, next_due = '', ''
if #out < want then
  local groups = redis.call('XINFO', 'GROUPS', stream)
  for _, g in ipairs(groups) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then last_delivered = info['last-delivered-id'] end
  end
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if #first > 0 then next_due = first[2] end
end

local reply = {moved, last_delivered, next_due}
for _, e in ipairs(out) do reply[#reply + 1] = e end
return reply
