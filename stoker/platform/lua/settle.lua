-- settle.lua: finish an intake entry without placing it (an interrupted attempt that is
-- retried or dead-lettered, a sync call answered by the scheduler), atomically with its ack.
--
-- KEYS[1]  the intake stream holding the entry (consumer group ARGV[1])
-- KEYS[2]  {p}:ledger     stream of ledger records
-- KEYS[3]  {p}:delayed    zset of retries
-- ARGV[1]  consumer group
-- ARGV[2]  entry id
-- ARGV[3]  ledger record ("" = none)
-- ARGV[4]  reply list ("" = none)
-- ARGV[5]  reply
-- ARGV[6]  action: "" | "retry" | "dlq"
-- ARGV[7]  retry: due (ms); dlq: the dead-letter entry
-- ARGV[8]  retry: the delayed member; dlq: the dead-letter stream key
-- ARGV[9]  outcome stream of the trigger that asked for it ("" = none)
-- ARGV[10] outcome (msgpack)
-- Returns 1, or 0 when another scheduler already settled the entry (nothing done).
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('XADD', KEYS[2], '*', 'r', ARGV[3]) end
if ARGV[4] ~= '' then
  redis.call('RPUSH', ARGV[4], ARGV[5])
  redis.call('PEXPIRE', ARGV[4], 120000)
end
if ARGV[6] == 'retry' then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[7]), ARGV[8])
elseif ARGV[6] == 'dlq' then
  redis.call('XADD', ARGV[8], '*', 'd', ARGV[7])
end
if ARGV[9] ~= nil and ARGV[9] ~= '' then
  redis.call('XADD', ARGV[9], 'MAXLEN', '~', 100000, '*', 'o', ARGV[10])
end
return 1
