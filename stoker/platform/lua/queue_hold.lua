-- queue_hold.lua: change the visibility of messages a consumer holds.
--
-- KEYS[1]  {p}:queue:{q}   stream (consumer group ARGV[1])
-- ARGV[1]  consumer group
-- ARGV[2]  consumer: only messages it still holds are touched (another consumer may have
--          received a message again after its visibility timeout)
-- ARGV[3]  idle time to set (ms): 0 keeps the message invisible for a whole visibility
--          timeout from now; the visibility timeout makes it visible at once
-- ARGV[4]  "1": this receive does not count (a throttled or overflowing batch gives its
--          messages back without spending an attempt)
-- ARGV[5..] stream entry ids
-- Returns how many messages were touched.
local stream, group, consumer, idle = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local uncount = ARGV[4] == '1'
local n = 0
for i = 5, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', stream, group, id, id, 1, consumer)
  if #p == 1 then
    if uncount then
      local count = math.max(0, tonumber(p[1][4]) - 1)
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'IDLE', idle, 'RETRYCOUNT', count, 'JUSTID')
    else
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'IDLE', idle, 'JUSTID')
    end
    n = n + 1
  end
end
return n
