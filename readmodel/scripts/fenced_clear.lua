-- Delete MANY hash fields or keys, each only while it still holds the value the caller read
-- (`projector verify --repair`: positions past the source's clock, which would make the writer skip
-- every real change to their document). A value rewritten since (a newer leader's write, or a
-- repair of its own) is left alone.
-- KEYS: the keys, then the fence copy of their slot (and its audit list, tests only:
-- readmodel.fences); on a Redis Cluster every key of one call shares a slot (the caller groups them).
-- ARGV: fencing token ('' for an unfenced caller), then two per key, in the order of KEYS: the hash
-- field ('' for the whole key, a string), the value read.
-- Returns how many were deleted; or the error "FENCED <newer>" (nothing written).
local count = math.floor((#ARGV - 1) / 2)
local refused = fence_check(KEYS[count + 1], KEYS[count + 2], ARGV[1], 'clear')
if refused then return refused end
local deleted = 0
for i = 1, count do
  local name, read = ARGV[2 * i], ARGV[2 * i + 1]
  if name == '' then
    if redis.call('GET', KEYS[i]) == read then deleted = deleted + redis.call('DEL', KEYS[i]) end
  elseif redis.call('HGET', KEYS[i], name) == read then
    deleted = deleted + redis.call('HDEL', KEYS[i], name)
  end
end
return deleted
