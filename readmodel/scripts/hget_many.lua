-- Read one field of each of many hashes in one call: HGET KEYS[i] ARGV[i] for every i (a missing
-- field or hash gives nil in its place). Read-only; on a Redis Cluster every key of one call
-- must share a slot (readmodel.scripts.slot_groups). The writer reads the positions the current
-- owners hold this way (readmodel.writer: one command per batch, not one per document).
local found = {}
for i = 1, #KEYS do
  found[i] = redis.call('HGET', KEYS[i], ARGV[i])
end
return found
