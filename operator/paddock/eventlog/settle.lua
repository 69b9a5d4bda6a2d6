-- Remove a work entry for good: ack it, delete it (the stream keeps only live work) and
-- clear the session's dedup mark if it points at this entry.
-- KEYS: work stream, queued hash
-- ARGV: session id, consumer group, entry id
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[3] then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 0
