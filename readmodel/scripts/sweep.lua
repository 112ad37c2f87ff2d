-- Remove ONE user's live tasks that went stale by now and, when a min seq is given (the end of a
-- resync), tasks and the balance last written before it. A version jump (> 0) moves the version
-- that far and announces it even when nothing changed: after Redis lost acknowledged writes in a
-- failover, a version a client already saw must not be handed out again for another state.
-- KEYS: user, tasks, seq (the first three of Layout.user_keys). ARGV: channel, updatedAt, now (ms),
-- min seq ('' for none), version jump (0 for none).
-- Returns {version or 0, next deadline or -1, removed generation ids...}.
local now = tonumber(ARGV[3])
local min_seq = ARGV[4]
local jump = tonumber(ARGV[5]) or 0
local removed = {}
local next_deadline = -1
local tasks = redis.call('HGETALL', KEYS[2])
for i = 1, #tasks, 2 do
  local id, record = tasks[i], tasks[i + 1]
  local stale_at = tonumber(string.match(record, '"staleAt":(%d+)'))
  local seq = redis.call('HGET', KEYS[3], id)
  if (stale_at and stale_at <= now) or (min_seq ~= '' and ((not seq) or seq < min_seq)) then
    redis.call('HDEL', KEYS[2], id)
    removed[#removed + 1] = id
  elseif stale_at and (next_deadline < 0 or stale_at < next_deadline) then
    next_deadline = stale_at
  end
end
local changed = #removed > 0
if min_seq ~= '' then
  local seq = redis.call('HGET', KEYS[1], 'balanceSeq')
  if seq and seq < min_seq then
    redis.call('HDEL', KEYS[1], 'balanceSeq')
    if redis.call('HDEL', KEYS[1], 'usdCredit', 'points', 'exp') > 0 then changed = true end
  end
end
local version = 0
if changed or jump > 0 then
  version = redis.call('HINCRBY', KEYS[1], 'version', math.max(jump, 1))
  redis.call('HSET', KEYS[1], 'updatedAt', ARGV[2])
  redis.call('SPUBLISH', ARGV[1], version)
end
local result = {version, next_deadline}
for i = 1, #removed do result[#result + 1] = removed[i] end
return result
