-- Remove the live tasks of SEVERAL users that went stale by now and, when a min seq is given (the
-- end of a resync), tasks and the balance last written before it, of the documents this partition
-- owns (readmodel.keys.Partition and partition_hash, computed the same here; a balance stored before
-- its document was recorded counts as partition 0's). A version jump (> 0) moves the version
-- that far, and at least to the clock in ms, and announces it even when nothing changed: after
-- Redis lost acknowledged writes in a failover (or a dump was restored), a version a client
-- already saw must not be handed out again for another state. Each user changes atomically with its version and announcement; on a Redis
-- Cluster every key of one call shares a slot (the caller groups the users so).
-- KEYS: user, tasks, seq (the first three of Layout.user_keys) of each user in turn, then the fence
-- copy of their slot (and its audit list, tests only: readmodel.fences).
-- ARGV: updatedAt, now (ms), min seq ('' for none), version jump (0 for none), partition index,
-- partition count, fencing token ('' for an unfenced caller), then each user's channel, in the
-- order of KEYS.
-- Returns, for each user in turn: version or 0, next deadline or -1, how many tasks are left, how
-- many were removed, then their ids; or the error "FENCED <newer>" (nothing written) when a leader
-- with a newer token has written to this slot.
local users = math.floor(#KEYS / 3)
local refused = fence_check(KEYS[3 * users + 1], KEYS[3 * users + 2], ARGV[7], 'sweep')
if refused then return refused end
local now = tonumber(ARGV[2])
local min_seq = ARGV[3]
local jump = tonumber(ARGV[4]) or 0
local part, parts = tonumber(ARGV[5]) or 0, tonumber(ARGV[6]) or 1
local function owns(id)
  if parts == 1 then return true end
  if not id then return part == 0 end
  local h = 0
  for i = 1, #id do h = (h * 31 + string.byte(id, i)) % 2147483647 end
  return h % parts == part
end
local result = {}
for u = 1, users do
  local user, tasks_key, seq_key = KEYS[3 * u - 2], KEYS[3 * u - 1], KEYS[3 * u]
  local removed = {}
  local next_deadline = -1
  local tasks = redis.call('HGETALL', tasks_key)
  for i = 1, #tasks, 2 do
    local id, record = tasks[i], tasks[i + 1]
    local stale_at = tonumber(string.match(record, '"staleAt":(%d+)'))
    local gone = stale_at and stale_at <= now
    if not gone and min_seq ~= '' and owns(id) then
      local seq = redis.call('HGET', seq_key, id)
      gone = (not seq) or seq < min_seq
    end
    if gone then
      redis.call('HDEL', tasks_key, id)
      removed[#removed + 1] = id
    elseif stale_at and (next_deadline < 0 or stale_at < next_deadline) then
      next_deadline = stale_at
    end
  end
  local changed = #removed > 0
  if min_seq ~= '' then
    local seq = redis.call('HGET', user, 'balanceSeq')
    if seq and seq < min_seq and owns(redis.call('HGET', user, 'balanceDoc') or nil) then
      redis.call('HDEL', user, 'balanceSeq', 'balanceDoc')
      if redis.call('HDEL', user, 'usdCredit', 'points', 'exp') > 0 then changed = true end
    end
  end
  local version = 0
  if jump > 0 then
    -- At least the clock in ms: past every version counted up one change at a time before, however
    -- old a restored dump is (a plain +jump only covers one less than jump versions back).
    version = string.format('%d', math.max((tonumber(redis.call('HGET', user, 'version')) or 0) + jump, now))
    redis.call('HSET', user, 'version', version)
    version = tonumber(version)  -- an integer, whichever Lua (a float would print as 1.8e+12)
  elseif changed then
    version = redis.call('HINCRBY', user, 'version', 1)
  end
  if changed or jump > 0 then
    redis.call('HSET', user, 'updatedAt', ARGV[1])
    redis.call('SPUBLISH', ARGV[7 + u], version)
  end
  result[#result + 1] = version
  result[#result + 1] = next_deadline
  result[#result + 1] = #tasks / 2 - #removed
  result[#result + 1] = #removed
  for i = 1, #removed do result[#result + 1] = removed[i] end
end
return result
