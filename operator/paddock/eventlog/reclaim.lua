-- Take over the first work entry idle longer than the lease TTL: its worker stopped
-- heartbeating (heartbeats reset the idle time of the entry they work on).
-- KEYS: work stream, queued hash
-- ARGV: consumer group, consumer, minimum idle time in ms, most pending entries to look at
--       for the wait
-- Reply: {entry id, session id}, or {ms} if no entry is idle that long: how long until the
-- most idle of the first ARGV[4] pending entries will be (the TTL if none is pending), so
-- the caller wakes up just when it becomes reclaimable instead of polling.
local cursor = '0-0'
repeat
  local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor,
    'COUNT', 1)
  local entry = claimed[2][1]
  if entry then
    local session = entry[2][2]
    if redis.call('HGET', KEYS[2], session) == entry[1] then
      redis.call('HDEL', KEYS[2], session)
    end
    return {entry[1], session}
  end
  cursor = claimed[1]
until cursor == '0-0'
local ttl = tonumber(ARGV[3])
local most_idle = 0
for _, pending in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[4])) do
  most_idle = math.max(most_idle, pending[3])
end
return {math.max(ttl - most_idle, 1)}
