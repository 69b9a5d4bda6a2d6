-- The prelude: helpers that scripts.py prepends to every script reading a session's lease,
-- so the lease format and the fence check are written once. A lease is the string
-- "<fencing token>:<holder>" (keys.SessionKeys.lease).

-- The fencing token and holder of the lease at `key`; nil, nil if nobody holds it.
local function read_lease(key)
  local lease = redis.call('GET', key)
  if lease then
    return string.match(lease, '^(%d+):(.*)$')
  end
  return nil, nil
end

-- The fence check: nil if the lease at `key` carries fencing token `token` (a string),
-- else the reply refusing the write, {'lost', current holder or false}.
local function fence_refusal(key, token)
  local current, holder = read_lease(key)
  if current ~= token then
    return {'lost', holder or false}
  end
  return nil
end

-- Stream id a > stream id b (both "<ms>-<seq>").
local function later(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if tonumber(ams) ~= tonumber(bms) then
    return tonumber(ams) > tonumber(bms)
  end
  return tonumber(aseq) > tonumber(bseq)
end

