-- Release a lease, only for the holder of the given token. With a "handled through"
-- position, release only if no input arrived after it, and record it as handled: the
-- check and the release are one step, so input cannot slip in between them unnoticed.
-- KEYS: meta, lease
-- ARGV: token, stream id of the last event the holder handled ('' = release unconditionally)
-- Reply: {'released'} | {'pending'} (lease kept) | {'lost', holder or nil} | {'no_session'}
local function later(a, b) -- stream id a > stream id b
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if tonumber(ams) ~= tonumber(bms) then
    return tonumber(ams) > tonumber(bms)
  end
  return tonumber(aseq) > tonumber(bseq)
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_session'}
end
local lease = redis.call('GET', KEYS[2])
local token, holder
if lease then
  token, holder = string.match(lease, '^(%d+):(.*)$')
end
if token ~= ARGV[1] then
  return {'lost', holder or false}
end
if ARGV[2] ~= '' then
  local input = redis.call('HGET', KEYS[1], 'last_input')
  if input and later(input, ARGV[2]) then
    return {'pending'}
  end
  local handled = redis.call('HGET', KEYS[1], 'handled_input')
  if not handled or later(ARGV[2], handled) then
    redis.call('HSET', KEYS[1], 'handled_input', ARGV[2])
  end
end
redis.call('DEL', KEYS[2])
return {'released'}
