-- start.lua: a node is about to start events; it may only if it has not been declared dead.
--
-- KEYS[1]  {p}:nodes               zset node_id -> last heartbeat (ms)
-- KEYS[2]  {p}:node:{id}:started   set of the inbox entries this node has started
-- ARGV[1]  node id
-- ARGV[2..] inbox entry ids
--
-- The reclaim of a dead node removes it from KEYS[1] and deletes KEYS[2] in the same atomic
-- step, so an event is either started here (and then counted an attempt if the node is
-- lost) or placed again as it was, never both. Returns 1 (start them) or 0 (the node was
-- declared dead: its events have been placed again; start none).
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
for i = 2, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return 1
