-- Create a session's snapshot hash unless the session exists.
-- KEYS: meta
-- ARGV: agent ("<namespace>/<name>")
-- Reply: 1 if created, 0 if the session already existed (left untouched).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'agent', ARGV[1], 'status', 'idle', 'event_count', 0,
  'created_at', now[1] * 1000 + math.floor(now[2] / 1000))
return 1
