-- After an accepted sweep (readmodel.sweeping.settle): move each swept user's deadline to the stale
-- time of its earliest live task, or remove it when the sweep left no live task, but only while
-- the deadline is the one read before the sweep. A deadline that changed since was written after
-- the sweep looked (a put that moved it earlier or added it again: another writer's when the
-- fence could not tell, docs/two-writers.md); it stays, and is only moved earlier (LT).
-- KEYS: the deadlines sorted set, then the fence copy of its slot (and its audit list, tests only:
-- readmodel.fences).
-- ARGV: fencing token ('' for an unfenced caller), then three per user: the user, its next deadline
-- (-1: no live task left), its deadline as read before the sweep ('' for none).
-- Returns the users whose deadline it removed or moved (readmodel.sweeping looks at them again);
-- or the error "FENCED <newer>" (nothing written) when a leader with a newer token has written to
-- this slot.
local refused = fence_check(KEYS[2], KEYS[3], ARGV[1], 'deadline')
if refused then return refused end
local moved = {}
for i = 2, #ARGV, 3 do
  local user, next_deadline, seen = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local current = tonumber(redis.call('ZSCORE', KEYS[1], user) or '')
  local unchanged = current == seen
  if tonumber(next_deadline) < 0 then
    if unchanged and current then
      redis.call('ZREM', KEYS[1], user)
      moved[#moved + 1] = user
    end
  elseif unchanged then
    if current ~= tonumber(next_deadline) then
      redis.call('ZADD', KEYS[1], next_deadline, user)
      moved[#moved + 1] = user
    end
  else
    redis.call('ZADD', KEYS[1], 'LT', next_deadline, user)
  end
end
return moved
