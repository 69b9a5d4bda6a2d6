-- Take over the first work entry idle longer than the lease TTL: its worker stopped
-- heartbeating (heartbeats reset the idle time of the entry they work on).
-- KEYS: work stream, queued hash
-- ARGV: consumer group, consumer, minimum idle time in ms
-- Reply: {entry id, session id, idle ms before the takeover (-1 if unknown)}, or {} if no
-- entry is idle that long.
local cursor = '0-0'
repeat
  -- The claim resets the idle time: read it first (the same first entry idle that long).
  -- pcall: a tenant user provisioned before XPENDING was allowed still claims, unmeasured.
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], cursor, '+', 1)
  local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor,
    'COUNT', 1)
  local entry = claimed[2][1]
  if entry then
    local session = entry[2][2]
    if redis.call('HGET', KEYS[2], session) == entry[1] then
      redis.call('HDEL', KEYS[2], session)
    end
    local idle = -1
    if pending[1] and pending[1][1] == entry[1] then
      idle = pending[1][3]
    end
    return {entry[1], session, idle}
  end
  cursor = claimed[1]
until cursor == '0-0'
return {}
