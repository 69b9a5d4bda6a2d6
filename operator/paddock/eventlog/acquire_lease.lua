-- Take a session's lease with a new fencing token, unless someone holds it.
-- KEYS: meta, lease, fence
-- ARGV: holder, ttl in ms, '1' = take it only if the session has input not yet handled
-- Reply: {'acquired', token} | {'held', holder, ms the lease still runs} | {'no_input'} |
-- {'no_session'}

-- Checking the session here keeps a deleted session from getting a lease and fence again.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_session'}
end
local held, holder = read_lease(KEYS[2])
if held then
  return {'held', holder, redis.call('PTTL', KEYS[2])}
end
if ARGV[3] == '1' then
  local input = redis.call('HGET', KEYS[1], 'last_input')
  local handled = redis.call('HGET', KEYS[1], 'handled_input')
  if not input or (handled and not later(input, handled)) then
    return {'no_input'}
  end
end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return {'acquired', token}
