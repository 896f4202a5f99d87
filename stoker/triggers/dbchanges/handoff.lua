-- handoff.lua: a change tailer moves its batch in flight, fenced by its lease.
--
-- Publishing a batch (its event on intake and its `queued` ledger record) and recording it
-- as the batch in flight happen together or not at all, so a tailer killed at any moment
-- neither loses a batch nor publishes it twice: after a restart it finds the batch in
-- flight and waits for its outcome instead of publishing again. Only the holder of the
-- lease may do it, and only from the in-flight state it last saw (compare and set).
--
-- KEYS[1]  {p}:lock:dbchanges:{consumer}      the lease (string: the holder's token)
-- KEYS[2]  {p}:dbchanges:{consumer}:inflight  the batch in flight (string: JSON), absent when none
-- KEYS[3]  {p}:dbchanges:{consumer}:outcomes  the outcome stream (entries 'o' = outcome)
-- KEYS[4..] streams to append one entry each to (intake, ledger, dead letters, outcomes)
-- ARGV[1]  the lease token
-- ARGV[2]  the in-flight value expected now ("" = none)
-- ARGV[3]  the new in-flight value ("" = none: delete it)
-- ARGV[4]  an entry of the outcome stream to delete, now consumed ("" = none)
-- ARGV[5..] for each stream KEYS[4..]: the number of field/value pairs, then the pairs
--
-- Returns 1 when done, 0 when the lease is not held, -1 when the in-flight value differs.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[2] then
  return -1
end
local a = 5
for k = 4, #KEYS do
  local n = tonumber(ARGV[a])
  local fields = {}
  for j = 1, 2 * n do
    fields[j] = ARGV[a + j]
  end
  redis.call('XADD', KEYS[k], '*', unpack(fields))
  a = a + 2 * n + 1
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('XDEL', KEYS[3], ARGV[4])
end
return 1
