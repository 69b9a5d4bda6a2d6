-- Extend a lease, only for the holder of the given token.
-- KEYS: lease
-- ARGV: token, ttl in ms
-- Reply: {'ok'} | {'lost', holder or nil}
local refusal = fence_refusal(KEYS[1], ARGV[1])
if refusal then
  return refusal
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'ok'}
