-- Take the leader lease. KEYS: leader, fence. ARGV: holder id, ttl (ms), the lowest token the caller
-- may be handed ('' for any: after a failover lost the fence's last increments, a copy of it seen
-- elsewhere, readmodel.fences). Returns the new fencing token, or 0 when someone else holds the
-- lease. Every acquisition (a holder taking its own lease again too) takes a new token: writes
-- queued under the previous one are refused once the new one is in use.
local current = redis.call('GET', KEYS[1])
if current then
  local holder = string.match(current, '^(.*)|%d+$')
  if holder ~= ARGV[1] then return 0 end
end
local token = redis.call('INCR', KEYS[2])
if ARGV[3] and ARGV[3] ~= '' and token < tonumber(ARGV[3]) then
  token = tonumber(ARGV[3])
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
