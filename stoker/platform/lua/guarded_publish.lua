-- guarded_publish.lua: compare-and-set one hash field and, in the same atomic step, publish
-- an async event (its intake entry and its `queued` ledger record), as Bus.publish does.
-- Triggers keep their durable position in such a field (a file's processed record, a
-- schedule's last fired tick): the event is published exactly when the position moves, so
-- two runners never both publish it and a crash never separates the two writes.
--
-- KEYS[1]  the position hash
-- KEYS[2]  {p}:intake:async
-- KEYS[3]  {p}:ledger
-- ARGV[1]  field
-- ARGV[2]  the value the caller read ('' = the field was absent)
-- ARGV[3]  the new value ('' = delete the field)
-- ARGV[4]  the ledger record ('' = none)
-- ARGV[5..] the intake entry's fields and values (none: only compare-and-set)
-- Returns 1 when the field held the expected value (and the event was published), else 0.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (current or '') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
if #ARGV > 4 then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
  if ARGV[4] ~= '' then redis.call('XADD', KEYS[3], '*', 'r', ARGV[4]) end
end
return 1
