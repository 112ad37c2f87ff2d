-- Raise one slot's copy of the fencing token (readmodel.fences) to a new leader's token.
-- KEYS: the copy (and its audit list, tests only). ARGV: the token. Returns 0 when raised, or the
-- copy when it already is at or above the token (another leader was handed that token: the caller
-- must take a newer one). A raise is audited as "token raise time".
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur >= tonumber(ARGV[1]) then return cur end
redis.call('SET', KEYS[1], ARGV[1])
if KEYS[2] then
  local t = redis.call('TIME')
  redis.call('RPUSH', KEYS[2], ARGV[1] .. ' raise ' .. t[1] .. string.format('%06d', tonumber(t[2])))
end
return 0
