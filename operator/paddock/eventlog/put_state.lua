-- Write one of a session's companion keys, only while the session exists, so that no
-- key outlives a delete.
-- KEYS: meta, target[, pinned]
-- ARGV: "set", value[, pinned value] | "hset", field, value
-- A pinned value is written once: the first writer's stays (SET NX).
-- Reply: 1 if written, 0 if the session does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[1] == 'set' then
  redis.call('SET', KEYS[2], ARGV[2])
  if KEYS[3] then
    redis.call('SET', KEYS[3], ARGV[3], 'NX')
  end
else
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
return 1
