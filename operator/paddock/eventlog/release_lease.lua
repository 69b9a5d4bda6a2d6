-- Release a lease, only for the holder of the given token. With a "handled through"
-- position, release only if no input arrived after it, and record it as handled: the
-- check and the release are one step, so input cannot slip in between them unnoticed.
-- KEYS: meta, lease
-- ARGV: token, stream id of the last event the holder handled ('' = release unconditionally)
-- Reply: {'released'} | {'pending'} (lease kept) | {'lost', holder or nil} | {'no_session'}

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_session'}
end
local refusal = fence_refusal(KEYS[2], ARGV[1])
if refusal then
  return refusal
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
