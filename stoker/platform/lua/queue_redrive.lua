-- queue_redrive.lua: move messages from a queue (usually a dead-letter queue) back to
-- the queue each came from, or to a given queue.
--
-- KEYS[1]  {p}:queue:{q}   the stream to move from (consumer group ARGV[1])
-- KEYS[2]  {p}:queues      set of queue names
-- ARGV[1]  consumer group
-- ARGV[2]  key prefix of queue streams ({p}:queue:)
-- ARGV[3]  destination queue name, or "" for each message's source queue (field dq)
-- ARGV[4]  at most this many messages
-- ARGV[5]  start after this stream entry id ("0" = from the start)
--
-- Messages in flight (being consumed from KEYS[1]) are left where they are, and so are
-- messages with no known source when no destination is given. A moved message keeps its
-- id, body, attributes and sent time; its dead-letter fields are dropped, so its receive
-- count starts again. Returns {moved, skipped_in_flight, skipped_no_source, last entry id seen}.
local source, queues, group, prefix, dest = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
local limit, cursor = tonumber(ARGV[4]), ARGV[5]
local has_group = redis.pcall('XINFO', 'GROUPS', source)
local grouped = false
if type(has_group) == 'table' and not has_group.err then
  for _, g in ipairs(has_group) do
    for i = 1, #g, 2 do
      if g[i] == 'name' and g[i + 1] == group then grouped = true end
    end
  end
end
local moved, in_flight, no_source, last = 0, 0, 0, cursor
local start = '(' .. cursor
if cursor == '0' then start = '-' end
local entries = redis.call('XRANGE', source, start, '+', 'COUNT', limit)
for _, e in ipairs(entries) do
  local id, fields = e[1], e[2]
  last = id
  local pending = {}
  if grouped then pending = redis.call('XPENDING', source, group, id, id, 1) end
  if #pending > 0 then
    in_flight = in_flight + 1
  else
    local target, kept = dest, {}
    for i = 1, #fields, 2 do
      local k = fields[i]
      if k == 'dq' then
        if target == '' then target = fields[i + 1] end
      elseif k ~= 'dr' and k ~= 'dt' then
        kept[#kept + 1] = k
        kept[#kept + 1] = fields[i + 1]
      end
    end
    if target == '' then
      no_source = no_source + 1
    else
      redis.call('XADD', prefix .. target, '*', unpack(kept))
      redis.call('XDEL', source, id)
      redis.call('SADD', queues, target)
      moved = moved + 1
    end
  end
end
return {moved, in_flight, no_source, last}
