-- Remove ONE user's live tasks that went stale by now and, when a min seq is given (the end of a
-- resync), tasks and the balance last written before it, of the documents this partition owns
-- (readmodel.keys.Partition and partition_hash, computed the same here; a balance stored before its
-- document was recorded counts as partition 0's). A version jump (> 0)
-- moves the version that far and announces it even when nothing changed: after Redis lost
-- acknowledged writes in a failover, a version a client already saw must not be handed out again
-- for another state.
-- KEYS: user, tasks, seq (the first three of Layout.user_keys). ARGV: channel, updatedAt, now (ms),
-- min seq ('' for none), version jump (0 for none), partition index, partition count.
-- Returns {version or 0, next deadline or -1, removed generation ids...}.
local now = tonumber(ARGV[3])
local min_seq = ARGV[4]
local jump = tonumber(ARGV[5]) or 0
local part, parts = tonumber(ARGV[6]) or 0, tonumber(ARGV[7]) or 1
local function owns(id)
  if parts == 1 then return true end
  if not id then return part == 0 end
  local h = 0
  for i = 1, #id do h = (h * 31 + string.byte(id, i)) % 2147483647 end
  return h % parts == part
end
local removed = {}
local next_deadline = -1
local tasks = redis.call('HGETALL', KEYS[2])
for i = 1, #tasks, 2 do
  local id, record = tasks[i], tasks[i + 1]
  local stale_at = tonumber(string.match(record, '"staleAt":(%d+)'))
  local seq = redis.call('HGET', KEYS[3], id)
  if (stale_at and stale_at <= now) or (min_seq ~= '' and ((not seq) or seq < min_seq) and owns(id)) then
    redis.call('HDEL', KEYS[2], id)
    removed[#removed + 1] = id
  elseif stale_at and (next_deadline < 0 or stale_at < next_deadline) then
    next_deadline = stale_at
  end
end
local changed = #removed > 0
if min_seq ~= '' then
  local seq = redis.call('HGET', KEYS[1], 'balanceSeq')
  if seq and seq < min_seq and owns(redis.call('HGET', KEYS[1], 'balanceDoc') or nil) then
    redis.call('HDEL', KEYS[1], 'balanceSeq', 'balanceDoc')
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
