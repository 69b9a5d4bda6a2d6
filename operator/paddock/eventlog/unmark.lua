-- Clear a session's dedup mark once its entry is delivered, so input that arrives while
-- the session is being worked on queues it again.
-- KEYS: queued hash
-- ARGV: session id, delivered entry id
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
