-- After an accepted sweep (readmodel.sweeping.settle): delete the owner entries of MANY tasks the
-- sweep removed, each only while it still names the swept user as the owner (an entry rewritten
-- since, for a document that moved to another user or left, is kept).
-- KEYS: the owner entries, then the fence copy of their slot (and its audit list, tests only:
-- readmodel.fences); on a Redis Cluster every key of one call shares a slot (the caller groups them).
-- ARGV: fencing token ('' for an unfenced caller), then the swept user of each entry, in the order
-- of KEYS.
-- Returns how many entries were deleted; or the error "FENCED <newer>" (nothing written).
local entries = #ARGV - 1
local refused = fence_check(KEYS[entries + 1], KEYS[entries + 2], ARGV[1], 'unown')
if refused then return refused end
local deleted = 0
for i = 1, entries do
  local cur = redis.call('GET', KEYS[i])
  if cur and string.match(cur, '^[^|]*|([^|]*)') == ARGV[i + 1] then
    deleted = deleted + redis.call('DEL', KEYS[i])
  end
end
return deleted
