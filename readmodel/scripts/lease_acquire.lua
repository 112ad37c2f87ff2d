-- Take (or keep) the leader lease. KEYS: leader, fence. ARGV: holder id, ttl (ms).
-- Returns the fencing token, or 0 when someone else holds the lease. A new acquisition
-- increments the fence, so older holders are refused.
local current = redis.call('GET', KEYS[1])
if current then
  local holder, token = string.match(current, '^(.*)|(%d+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
