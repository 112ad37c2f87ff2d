-- Record a document's owner entry "seq|owner|past owners"; it only moves forward.
-- KEYS: the owner entry, the fence copy of its slot (and its audit list: readmodel.fences). ARGV:
-- seq, owner ('' once the document left), past owners (comma-separated), ttl (s), fencing token
-- ('' for none). Returns 1 when written, 0 when a newer entry is there, "FENCED <newer>" (an
-- error, nothing written) when a leader with a newer token has written to this slot.
local refused = fence_check(KEYS[2], KEYS[3], ARGV[5], 'own')
if refused then return refused end
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^([^|]*)') > ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3], 'EX', ARGV[4])
return 1
