-- chord_part.lua: one header task of a Celery chord is done (the stoker bridge's chord join).
--
-- KEYS[1]  celery-taskset-meta-{gid}.stoker-parts  hash task id -> part, JSON
--          [group_index, task id, state, result]; the first part of a task wins, so a
--          redelivered task never counts twice
-- KEYS[2]  celery-taskset-meta-{gid}.s   the header's size, set by the producer (apply_chord)
-- KEYS[3]  celery-taskset-meta-{gid}.t   Celery's size adjustment (replaced tasks), may be absent
-- KEYS[4]  celery-taskset-meta-{gid}.stoker-claim  the task id that completed the chord
-- ARGV[1]  task id
-- ARGV[2]  part
-- ARGV[3]  expiry of these keys, seconds
-- Returns every part when this task completes the chord (again, when it is the one that
-- completed it before: a redelivery sends the body again rather than never), else {}.
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local size = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(redis.call('GET', KEYS[3]) or '0')
if size <= 0 or redis.call('HLEN', KEYS[1]) < size then
  return {}
end
local owner = redis.call('GET', KEYS[4])
if owner and owner ~= ARGV[1] then
  return {}
end
if not owner then
  redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[3])
end
return redis.call('HVALS', KEYS[1])
