-- Read part of a session's stream as one string ("<id> <payload>" lines), so the client
-- parses one reply instead of thousands of nested ones.
-- KEYS: events, meta
-- ARGV[1]    first id, XRANGE syntax: '-' / '+' or '(<id>' (exclusive)
-- ARGV[2]    'asc' or 'desc'
-- ARGV[3]    entries to scan at most
-- ARGV[4..]  event types to keep (none = all)
-- Reply: nil if there is no session, else {last scanned id or nil, lines, entries scanned}.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return nil
end
local rows
if ARGV[2] == 'asc' then
  rows = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[3])
else
  rows = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', ARGV[3])
end
local keep
if #ARGV > 3 then
  keep = {}
  for i = 4, #ARGV do
    keep[ARGV[i]] = true
  end
end
-- Pieces are concatenated once at the end: cheaper than building each line.
local out, n = {}, 0
for i = 1, #rows do
  local row = rows[i]
  -- Fields are always written as t, <type>, e, <payload>.
  if not keep or keep[row[2][2]] then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = row[1], ' ', row[2][4], '\n'
    n = n + 4
  end
end
out[n] = nil -- no newline after the last line
local last = false
if #rows > 0 then
  last = rows[#rows][1]
end
return {last, table.concat(out), #rows}
