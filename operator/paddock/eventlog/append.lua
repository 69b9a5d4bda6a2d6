-- Append events to a session's stream and fold them into its snapshot, atomically.
-- Fencing, idempotency and the snapshot update happen in the same step as the XADD, so a
-- refused append writes nothing and an accepted one is visible everywhere at once.
-- KEYS: events, meta, lease, idem
-- ARGV[1]     the append, JSON (one argument: each one more costs the client packing time):
--             token? (fencing token the writer's lease must carry, a string; absent =
--             unfenced), client? (true = refuse when the session is terminated: client
--             events), key? (idempotency key), reserved? (stream ids reserved for the first
--             events of the batch, comma-separated; see EventLog.reserve: used only if they
--             all still come after the stream's last entry, else every event gets a new id
--             ('*') as usual), and the snapshot changes: status?, stop_reason? (JSON text),
--             usage? (four token counts to add: input, output, cache read, cache creation),
--             input? (1-based position in the batch of its last user.* event), outcome? (a
--             user.define_outcome is in the batch)
-- ARGV[2..]   type, payload, type, payload, ...
-- Reply: {'ok', agent, previous, id...} (previous: the stream's last entry before the
--        append, '' if none: a writer that folded the log up to it has folded everything
--        before these events) | {'dup', agent, id, payload, ...} (stored earlier under
--        the key) | {'no_session'} | {'lost', holder or nil} | {'terminated'}
-- Every append runs this script, and each call into Redis costs server time (writes most):
-- the snapshot is written in one HSET, and only the fields this batch needs are read. HGET,
-- not HMGET: tenants' Redis users may run the commands of acl.TENANT_COMMANDS only, and
-- users provisioned before a new command was added keep their rules.
local change = cjson.decode(ARGV[1])
local agent = redis.call('HGET', KEYS[2], 'agent')
if not agent then -- every session's meta hash has its agent (create_session.lua)
  return {'no_session'}
end
if change.token then
  local refusal = fence_refusal(KEYS[3], change.token)
  if refusal then
    return refusal
  end
end
local status
if change.client or change.status then
  status = redis.call('HGET', KEYS[2], 'status')
end
if change.client and status == 'terminated' then
  return {'terminated'}
end

if change.key then
  local stored = redis.call('HGET', KEYS[4], change.key)
  if stored then
    local reply = {'dup', agent}
    for id in string.gmatch(stored, '[^,]+') do
      local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
      reply[#reply + 1] = id
      reply[#reply + 1] = entry[2][4]
    end
    return reply
  end
end

local previous = redis.call('HGET', KEYS[2], 'last_event') or ''
-- Reserved ids were handed out before the append (previews announced them): they hold
-- only if nothing was appended since, which the stream's last entry tells.
local reserved = {}
if change.reserved then
  local before = previous ~= '' and previous or '0-0'
  for id in string.gmatch(change.reserved, '[^,]+') do
    if not later(id, before) then
      reserved = {}
      break
    end
    reserved[#reserved + 1] = id
    before = id
  end
end

local reply = {'ok', agent, previous}
for i = 2, #ARGV, 2 do
  local id = reserved[i / 2] or '*'
  reply[#reply + 1] = redis.call('XADD', KEYS[1], id, 't', ARGV[i], 'e', ARGV[i + 1])
end
local count = #reply - 3
local last = reply[#reply]
-- The entry id carries the server time of the append.
local now = tonumber(string.match(last, '^(%d+)'))

local total = tonumber(redis.call('HGET', KEYS[2], 'event_count') or 0) + count
local fields = {'event_count', total, 'last_event', last}
if change.input then
  fields[#fields + 1], fields[#fields + 2] = 'last_input', reply[3 + change.input]
end
if change.status then
  -- Active time accrues only while running (reference §11.9).
  if status == 'running' and change.status ~= 'running' then
    local since = redis.call('HGET', KEYS[2], 'running_since')
    if since then
      redis.call('HINCRBY', KEYS[2], 'active_ms', now - tonumber(since))
    end
  elseif change.status == 'running' and status ~= 'running' then
    fields[#fields + 1], fields[#fields + 2] = 'running_since', now
  end
  fields[#fields + 1], fields[#fields + 2] = 'status', change.status
end
if change.stop_reason then
  fields[#fields + 1], fields[#fields + 2] = 'stop_reason', change.stop_reason
end
if change.outcome then
  fields[#fields + 1], fields[#fields + 2] = 'has_outcome', '1'
end
redis.call('HSET', KEYS[2], unpack(fields))
if change.usage then
  local counters = {'input_tokens', 'output_tokens', 'cache_read_input_tokens',
    'cache_creation_input_tokens'}
  for i, field in ipairs(counters) do
    redis.call('HINCRBY', KEYS[2], field, change.usage[i])
  end
end
if change.key then
  redis.call('HSET', KEYS[4], change.key, table.concat(reply, ',', 4))
end
return reply
