-- Extend a lease, only for the holder of the given token.
-- KEYS: lease
-- ARGV: token, ttl in ms
-- Reply: {'ok'} | {'lost', holder or nil}
local lease = redis.call('GET', KEYS[1])
local token, holder
if lease then
  token, holder = string.match(lease, '^(%d+):(.*)$')
end
if token ~= ARGV[1] then
  return {'lost', holder or false}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'ok'}
