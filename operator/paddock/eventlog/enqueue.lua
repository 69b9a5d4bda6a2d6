-- Queue a session on its Agent's work stream, unless an undelivered entry already queues it.
-- Optionally settles (acks and deletes) an entry in the same step, so a worker can hand a
-- session back without a moment where it is neither queued nor in progress.
-- KEYS: work stream, queued hash
-- ARGV: session id, consumer group, entry to settle ('' = none)
-- Reply: the new entry id, or nil if the session was already queued.
if ARGV[3] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[2], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return false
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[2], '0', 'MKSTREAM')
end
local id = redis.call('XADD', KEYS[1], '*', 'session', ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
