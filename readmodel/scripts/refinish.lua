-- Rewrite ONE user's recently finished entries of one task with its outcome as its document says
-- (`projector verify --repair`: an entry that differs from the document). The list keeps its order
-- and length; nothing is added (the list only holds what the projector saw finish), and an entry
-- that changed since the caller read it is left alone.
-- KEYS: finished (Layout.finished), the fence copy of its slot (and its audit list, tests only:
-- readmodel.fences). ARGV: fencing token ('' for an unfenced caller), the entry to write, then the
-- wrong entries as the caller read them.
-- Returns how many entries were rewritten, or the error "FENCED <newer>" (nothing written).
local refused = fence_check(KEYS[2], KEYS[3], ARGV[1], 'refinish')
if refused then return refused end
local wrong = {}
for i = 3, #ARGV do wrong[ARGV[i]] = true end
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local rewritten = 0
for i = 1, #entries do
  if wrong[entries[i]] then
    redis.call('LSET', KEYS[1], i - 1, ARGV[2])
    rewritten = rewritten + 1
  end
end
return rewritten
