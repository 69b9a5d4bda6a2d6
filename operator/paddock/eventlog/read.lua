-- Read part of a session's stream as the JSON of its events, one object a line, so the
-- client validates one string instead of assembling thousands of rows: each line is the
-- stored payload with the envelope spliced in, "id" (the sevt_ id, as ids.event_id encodes
-- it) and "processed_at" (the entry's milliseconds, which pydantic reads as Unix time).
-- KEYS: events, meta
-- ARGV[1]    first id, XRANGE syntax: '-' / '+' or '(<id>' (exclusive)
-- ARGV[2]    'asc' or 'desc'
-- ARGV[3]    entries to scan at most
-- ARGV[4]    the session's event-id tag (ids.session_tag)
-- ARGV[5..]  event types to keep (none = all)
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
if #ARGV > 4 then
  keep = {}
  for i = 5, #ARGV do
    keep[ARGV[i]] = true
  end
end

-- Fixed-width base62 in ASCII order, the encoding of ids.encode_base62 (tests/eventlog
-- compare the two). Integers below 2^53 are exact in Lua's numbers.
local DIGITS = {}
for i = 1, 62 do
  DIGITS[i - 1] = string.sub('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', i, i)
end
local function base62(value, width)
  local digits = {}
  for i = width, 1, -1 do
    local digit = value % 62
    digits[i] = DIGITS[digit]
    value = (value - digit) / 62
  end
  return table.concat(digits)
end

-- Entries of one append share their millisecond, and sequence numbers are nearly always
-- small: encode each once.
local last_millis, head = nil, nil
local seqs = {}
local tail = ARGV[4] .. '","processed_at":'
-- Pieces are concatenated once at the end: cheaper than building each line.
local out, n = {}, 0
local match, sub = string.match, string.sub -- locals: cheaper than global lookups per row
for i = 1, #rows do
  local row = rows[i]
  local fields = row[2]
  -- Fields are always written as t, <type>, e, <payload>.
  if not keep or keep[fields[2]] then
    local millis, seq = match(row[1], '^(%d+)-(%d+)$')
    if millis ~= last_millis then
      last_millis, head = millis, '{"id":"sevt_' .. base62(tonumber(millis), 8)
    end
    local seq_digits = seqs[seq]
    if not seq_digits then
      seq_digits = base62(tonumber(seq), 6)
      seqs[seq] = seq_digits
    end
    -- The payload is a JSON object: its '{' gives way to the envelope's.
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = head, seq_digits, tail, millis
    out[n + 5], out[n + 6], out[n + 7] = ',', sub(fields[4], 2), '\n'
    n = n + 7
  end
end
out[n] = nil -- no newline after the last line
local last = false
if #rows > 0 then
  last = rows[#rows][1]
end
return {last, table.concat(out), #rows}
