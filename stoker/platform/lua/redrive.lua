-- redrive.lua: send one dead letter back as a new async event, atomically with its removal.
--
-- KEYS[1]  {p}:dlq:{function}   the dead-letter stream
-- KEYS[2]  {p}:intake:async     stream
-- KEYS[3]  {p}:ledger           stream of ledger records
-- ARGV[1]  the dead letter's entry id
-- ARGV[2..5] the new event's intake fields: invocation id, function:version, type, envelope
-- ARGV[6]  its `queued` ledger record
-- Returns 1, or 0 when the dead letter was already redriven (nothing done).
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'i', ARGV[2], 'f', ARGV[3], 't', ARGV[4], 'e', ARGV[5])
redis.call('XADD', KEYS[3], '*', 'r', ARGV[6])
return 1
