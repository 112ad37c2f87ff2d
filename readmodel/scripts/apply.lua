-- Apply one batch's changes to ONE user's snapshot, atomically, and announce the new version.
-- KEYS: user, tasks, seq, finished (Layout.user_keys), the fence copy of their slot (and its audit
-- list, tests only: readmodel.fences). ARGV: channel, updatedAt, tombstone cap, fencing token ('' for
-- an unfenced caller), then one op per argument: "kind US id US seq US payload" (US = \x1f; kind
-- t = task put with its live record, x = task gone with its finished record as payload ('' when
-- unknown), b = balance put, g = balance gone).
-- A change older than the position stored for its document is ignored. A task that finishes is
-- remembered in the finished list once: when it leaves the snapshot, or when it was never seen live.
-- Tombstones (seq entries of tasks no longer live) are pruned to half the cap, oldest first, once
-- the cap is exceeded (looked at when a call adds a position: only then can the count pass it).
-- Returns the new version, or 0 when nothing visible changed (the version only moves on a visible
-- change), or the error "FENCED <newer>" (nothing written) when a leader with a newer token has
-- written to this slot.
-- A live task's record ends with "progressMovedAt" (readmodel.records.live_task_record): a put
-- that moves neither its status nor its progress keeps the stored one (a heartbeat that only
-- bumps updatedAt must not look like progress: api/stalled.py flags a task from this time).
local FINISHED_CAP = $FINISHED_CAP
local refused = fence_check(KEYS[5], KEYS[6], ARGV[4], 'apply')
if refused then return refused end
local MOVED = ',"progressMovedAt":'
local function status_and_progress(record)  -- plain finds: a pattern match costs more
  local from = string.find(record, '"status":', 1, true)
  local to = from and string.find(record, ',"progressSource":', from, true)
  return to and string.sub(record, from, to)
end
local function keep_moved_at(old, new)
  local was = status_and_progress(old)
  if was == nil or was ~= status_and_progress(new) then return new end
  local at_old, at_new = string.find(old, MOVED, 1, true), string.find(new, MOVED, 1, true)
  if at_old == nil or at_new == nil then return new end
  return string.sub(new, 1, at_new - 1) .. string.sub(old, at_old)
end
local changed, positions_grew = false, false
for i = 5, #ARGV do
  local kind, id, seq, payload = string.match(ARGV[i], '^(%a)\31([^\31]*)\31([^\31]*)\31(.*)$')
  if kind == 't' or kind == 'x' then
    local cur = redis.call('HGET', KEYS[3], id)
    if (not cur) or cur <= seq then
      if not cur then positions_grew = true end
      redis.call('HSET', KEYS[3], id, seq)
      if kind == 't' then
        local old = redis.call('HGET', KEYS[2], id)
        if old then payload = keep_moved_at(old, payload) end
        if old ~= payload then
          redis.call('HSET', KEYS[2], id, payload)
          changed = true
        end
      else
        local was_live = redis.call('HDEL', KEYS[2], id) == 1
        if was_live then changed = true end
        if payload ~= '' and (was_live or not cur) then
          redis.call('LPUSH', KEYS[4], payload)
          redis.call('LTRIM', KEYS[4], 0, FINISHED_CAP - 1)
          changed = true
        end
      end
    end
  else  -- one read and at most one write of the user's hash per balance change
    local cur = redis.call('HMGET', KEYS[1], 'balanceSeq', 'usdCredit', 'points', 'exp')
    if (not cur[1]) or cur[1] <= seq then
      if kind == 'b' then
        local usd, points, exp = string.match(payload, '^(%S+) (%S+) (%S+)$')
        redis.call('HSET', KEYS[1], 'balanceSeq', seq, 'balanceDoc', id, 'usdCredit', usd, 'points', points, 'exp', exp)
        if cur[2] ~= usd or cur[3] ~= points or cur[4] ~= exp then changed = true end
      else
        redis.call('HSET', KEYS[1], 'balanceSeq', seq, 'balanceDoc', id)
        if redis.call('HDEL', KEYS[1], 'usdCredit', 'points', 'exp') > 0 then changed = true end
      end
    end
  end
end
local cap = tonumber(ARGV[3])
if positions_grew and redis.call('HLEN', KEYS[3]) > cap then
  local all = redis.call('HGETALL', KEYS[3])
  local gone = {}
  for i = 1, #all, 2 do
    if redis.call('HEXISTS', KEYS[2], all[i]) == 0 then
      gone[#gone + 1] = {all[i + 1], all[i]}
    end
  end
  table.sort(gone, function(a, b) return a[1] < b[1] end)
  local excess = redis.call('HLEN', KEYS[3]) - math.floor(cap / 2)
  for i = 1, math.min(excess, #gone) do
    redis.call('HDEL', KEYS[3], gone[i][2])
  end
end
if not changed then return 0 end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[2])
redis.call('SPUBLISH', ARGV[1], version)
return version
