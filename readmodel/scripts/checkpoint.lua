-- Store the checkpoint and announce it. KEYS: fence, checkpoint (and an audit list of their slot,
-- tests only: readmodel.fences). ARGV: the caller's fencing token,
-- resume token (extended JSON), position, written at (ms), the Redis masters the covered writes
-- went to, the lag (ms) behind the source when the covered writes were applied, the channel that
-- announces it (Layout.applied), as "position lagMs atMs". Writes only while the caller's fencing token is the current one.
-- The checkpoint is written after every write it covers, so its position is what readers may rely
-- on: the read model reflects the source through it (the API serves it with every snapshot and
-- waits on the announcement). Returns 1 when written, 0 when fenced off.
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'token', ARGV[2], 'position', ARGV[3], 'atMs', ARGV[4], 'fence', ARGV[1], 'masters', ARGV[5],
           'lagMs', ARGV[6])
if KEYS[3] then
  local t = redis.call('TIME')
  redis.call('RPUSH', KEYS[3], ARGV[1] .. ' checkpoint ' .. t[1] .. string.format('%06d', tonumber(t[2])))
end
redis.call('SPUBLISH', ARGV[7], ARGV[3] .. ' ' .. ARGV[6] .. ' ' .. ARGV[4])
return 1
