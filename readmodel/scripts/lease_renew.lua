-- Extend the lease. KEYS: leader. ARGV: holder value ("id|token"), ttl (ms). 1 when renewed, 0 when lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
