-- Give the lease up. KEYS: leader. ARGV: holder value ("id|token"). 1 when released, 0 when not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
