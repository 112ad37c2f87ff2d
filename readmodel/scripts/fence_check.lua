-- Prepended to every fenced script (readmodel.fences). fence_check(copy, audit, token, kind):
-- nil when the caller may write (token '' = an unfenced caller: a tool or a test), or an error
-- reply "FENCED <newer>" to return at once, before any write, when the slot's copy is above the
-- caller's token. A copy below the token is raised to it. With an audit list (tests only), an
-- accepted write appends "token kind time" (the node's clock, microseconds).
-- Within one script run (readmodel.scripts.Many runs one script for many calls) a copy already
-- accepted for a token accepts it again without a look: the run is atomic, so nothing can have
-- raised the copy since (a GET per call cost ~0.7 us of Redis's time per user in a resync).
local fence_accepted = {}
local function fence_check(copy, audit, token, kind)
  if token == '' then return nil end
  if fence_accepted[copy] == token and not audit then return nil end
  local held = tonumber(redis.call('GET', copy) or '0')
  local mine = tonumber(token)
  if held > mine then return redis.error_reply('FENCED ' .. held) end
  if held < mine then redis.call('SET', copy, token) end
  fence_accepted[copy] = token
  if audit then
    local t = redis.call('TIME')
    redis.call('RPUSH', audit, token .. ' ' .. kind .. ' ' .. t[1] .. string.format('%06d', tonumber(t[2])))
  end
  return nil
end
