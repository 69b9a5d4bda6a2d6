-- Take over the first work entry idle longer than the lease TTL: its worker stopped
-- heartbeating (heartbeats reset the idle time of the entry they work on).
-- KEYS: work stream, queued hash
-- ARGV: consumer group, consumer, minimum idle time in ms, most pending entries to look at
--       for the wait
-- Reply: {entry id, session id, idle ms before the takeover (-1 if unknown)}, or {ms} if no
-- entry is idle that long: how long until the most idle of the first ARGV[4] pending
-- entries will be (the TTL if none is pending), so the caller wakes up just when it becomes
-- reclaimable instead of polling.
-- XPENDING runs with pcall: a tenant user provisioned before XPENDING was allowed still
-- claims, unmeasured, and waits a third of the TTL as before.
local cursor = '0-0'
repeat
  -- The claim resets the idle time: read it first (the same first entry idle that long).
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
    if type(pending) == 'table' and pending[1] and pending[1][1] == entry[1] then
      idle = pending[1][3]
    end
    return {entry[1], session, idle}
  end
  cursor = claimed[1]
until cursor == '0-0'
local ttl = tonumber(ARGV[3])
local all = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[4])
if type(all) ~= 'table' or all.err then
  return {math.max(math.floor(ttl / 3), 1)}
end
local most_idle = 0
for _, entry in ipairs(all) do
  most_idle = math.max(most_idle, entry[3])
end
return {math.max(ttl - most_idle, 1)}
