-- Record the owner entries "seq|owner|past owners" of MANY documents; each only moves forward.
-- KEYS: the owner entries, then the fence copy of their slot (and its audit list: readmodel.fences);
-- on a Redis Cluster every key of one call shares a slot (the caller groups the entries so).
-- ARGV: fencing token ('' for none), then four per entry, in the order of KEYS: seq, owner ('' once
-- the document left), past owners (comma-separated), ttl (s).
-- Returns, per entry, 1 when written or 0 when a newer entry is there; or the error "FENCED <newer>"
-- (nothing written) when a leader with a newer token has written to this slot.
local entries = math.floor((#ARGV - 1) / 4)
local refused = fence_check(KEYS[entries + 1], KEYS[entries + 2], ARGV[1], 'own')
if refused then return refused end
local written = {}
for i = 1, entries do
  local a = 4 * i - 2
  local seq = ARGV[a]
  local cur = redis.call('GET', KEYS[i])
  if cur and string.match(cur, '^([^|]*)') > seq then
    written[i] = 0
  else
    redis.call('SET', KEYS[i], seq .. '|' .. ARGV[a + 1] .. '|' .. ARGV[a + 2], 'EX', ARGV[a + 3])
    written[i] = 1
  end
end
return written
