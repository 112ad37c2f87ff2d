-- Record a document's owner entry "seq|owner|past owners"; it only moves forward.
-- KEYS: the owner entry. ARGV: seq, owner ('' once the document left), past owners
-- (comma-separated), ttl (s). Returns 1 when written, 0 when a newer entry is there.
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^([^|]*)') > ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3], 'EX', ARGV[4])
return 1
