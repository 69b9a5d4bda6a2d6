-- Remove every work entry of a (deleted) session, queued or being worked on, and its
-- dedup mark. A worker still holding such an entry finds its lease gone and stops.
-- The stream holds only live work (finished entries are deleted), so the scan is short.
-- KEYS: work stream, queued hash
-- ARGV: session id, consumer group
-- Reply: the number of entries removed.
local removed = 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  if entry[2][2] == ARGV[1] then
    redis.call('XACK', KEYS[1], ARGV[2], entry[1])
    redis.call('XDEL', KEYS[1], entry[1])
    removed = removed + 1
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
return removed
