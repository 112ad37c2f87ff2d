-- Read ONE user's snapshot atomically: the user hash, the live tasks and the finished list.
-- KEYS: user, tasks, seq, finished (Layout.user_keys). Returns {user fields, tasks, finished}
-- (hashes as flat field/value lists).
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('LRANGE', KEYS[4], 0, -1)}
