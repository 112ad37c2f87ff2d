"""The Redis read model: key layout, the scripts that write it, the functions that read it.

Every key livestatus uses is built here; nothing else spells a key. Per user ``U`` (the hash tag
``{U}`` keeps one user's keys in one Redis Cluster slot, and every script touches one user only):

``ls:{U}:user``     hash: ``version``, ``updatedAt``, ``usdCredit``, ``points``, ``exp``, ``balanceSeq``
``ls:{U}:tasks``    hash: generation id -> task JSON (live tasks only)
``ls:{U}:seq``      hash: generation id -> position of the last change applied to it (live *and*
                    gone tasks: the entries of gone tasks are tombstones, capped per user)
``ls:{U}:finished`` list: the user's last tasks to finish, newest first (JSON with the final status)
``ls:{U}:changes``  pub/sub channel: the new version, published in the same script as the change

Shared keys: ``ls:owner:{gen:ID}`` / ``ls:owner:{econ:ID}``: ``"seq|owner|past owners"`` of
a task or balance document (delete events carry no masterAccountId; owner is empty once the
document left; expires a day after that), and ``ls:deadlines`` (sorted set: user -> earliest
moment one of their live tasks goes stale). :class:`Layout` also names the
worker's own keys (checkpoint, leader lease, fence, health, dead letters, durations, resync request).

A *position* (``seq``) orders changes: ``"%010d.%010d"`` of the change's cluster time, so string
order is time order. A change older than what a task or balance already reflects is ignored;
that makes applying idempotent and makes replaying an older stretch after a crash harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .normalize import Balance, Task

OWNER_TTL_S = 7 * 24 * 3600  # safety net only: a live task goes stale long before
PAST_OWNERS_CAP = 8  # a generation practically never changes owner; a cap keeps entries small
GONE_TTL_S = 24 * 3600  # how long the index remembers that a document left (covers any replay)
TOMBSTONE_CAP = 2000
FINISHED_CAP = 10  # finished tasks remembered per user
FINISHED_SHOWN_MS = 10 * 60 * 1000  # how long a finished task stays in the snapshot  # per user; pruned to half, oldest first, when exceeded


def position(seconds: int, increment: int) -> str:
    """A sortable position from a cluster time (bson.Timestamp's time and inc)."""
    return f"{seconds:010d}.{increment:010d}"


class Layout:
    """Key names under one prefix (tests use their own prefix to share one Redis)."""

    def __init__(self, prefix: str = "ls") -> None:
        self.prefix = prefix
        self.deadlines = f"{prefix}:deadlines"
        # The worker's own keys share the hash tag {projector}, so its scripts stay in one slot.
        self.checkpoint = f"{prefix}:{{projector}}:checkpoint"  # hash: resume token, position, fence
        self.leader = f"{prefix}:{{projector}}:leader"  # string with TTL: the lease holder's id
        self.fence = f"{prefix}:{{projector}}:fence"  # counter: fencing token of each new lease
        self.health = f"{prefix}:{{projector}}:health"  # hash: heartbeat, lag, rates, counters
        self.deadletters = f"{prefix}:deadletters"  # stream: rejected documents with reasons
        self.durations = f"{prefix}:durations"  # hash: toolId -> typical duration (ms)
        self.resync_request = f"{prefix}:{{projector}}:resync"  # string: set by `projector resync`

    def user(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:user"

    def tasks(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:tasks"

    def seqs(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:seq"

    def channel(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:changes"

    def channel_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:changes"

    def user_of_channel(self, channel: str) -> str:
        return channel[len(self.prefix) + 2 : -len("}:changes")]

    def user_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:user"

    def user_of_key(self, key: str) -> str:
        return key[len(self.prefix) + 2 : -len("}:user")]

    def task_owner(self, generation_id: str) -> str:
        return f"{self.prefix}:owner:{{gen:{generation_id}}}"

    def balance_owner(self, doc_id: str) -> str:
        return f"{self.prefix}:owner:{{econ:{doc_id}}}"

    def finished(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:finished"

    def user_keys(self, uid: str) -> list[str]:
        return [self.user(uid), self.tasks(uid), self.seqs(uid), self.finished(uid)]


# ---------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class TaskChange:
    """A generation document changed: ``task`` is its new state, None when it is gone."""

    generation_id: str
    seq: str
    owner: str | None
    task: Task | None
    expected_duration_ms: int | None = None
    stale_at_ms: int | None = None


@dataclass(frozen=True)
class BalanceChange:
    """A userEconomy document changed: ``balance`` is its new state, None when deleted."""

    doc_id: str
    seq: str
    owner: str | None
    balance: Balance | None


Change = TaskChange | BalanceChange


def task_record(task: Task, expected_duration_ms: int | None, stale_at_ms: int | None) -> str:
    """The JSON stored for a live task: the visible fields plus when it goes stale."""
    record = task.visible()
    record["expectedDurationMs"] = expected_duration_ms
    if task.progress_source is None and expected_duration_ms:
        record["progressSource"] = "estimate"
    record["staleAt"] = stale_at_ms
    return json.dumps(record, separators=(",", ":"))


def finished_record(task: Task) -> str:
    """The JSON remembered for a task that reached a terminal status: its outcome."""
    record = {
        "generationId": task.generation_id,
        "idHash": task.id_hash,
        "status": task.status,
        "toolId": task.tool_id,
        "toolDisplayName": task.tool_display_name,
        "costUsd": task.cost_usd,
        "startedAt": task.started_at,
        "finishedAt": task.updated_at,
        "finishedAtMs": task.last_activity_ms,
    }
    return json.dumps(record, separators=(",", ":"))


# ---------------------------------------------------------------------------- scripts

# KEYS: user, tasks, seq, finished. ARGV: channel, updatedAt, tombstone cap, then one op per
# argument: "kind US id US seq US payload" (US = \x1f; kind t = task put, x = task gone with its
# final state as payload ('' when unknown), b = balance put, g = balance gone). A task that
# finishes is remembered in the finished list once: when it leaves the snapshot, or when it was
# never seen live. Returns the new version, or 0 when nothing visible changed.
APPLY_LUA = """
local FINISHED_CAP = $FINISHED_CAP
local changed = false
for i = 4, #ARGV do
  local kind, id, seq, payload = string.match(ARGV[i], '^(%a)\\31([^\\31]*)\\31([^\\31]*)\\31(.*)$')
  if kind == 't' or kind == 'x' then
    local cur = redis.call('HGET', KEYS[3], id)
    if (not cur) or cur <= seq then
      redis.call('HSET', KEYS[3], id, seq)
      if kind == 't' then
        if redis.call('HGET', KEYS[2], id) ~= payload then
          redis.call('HSET', KEYS[2], id, payload)
          changed = true
        end
      else
        local was_live = redis.call('HDEL', KEYS[2], id) == 1
        if was_live then changed = true end
        if payload ~= '' and (was_live or not cur) then
          redis.call('LPUSH', KEYS[4], payload)
          redis.call('LTRIM', KEYS[4], 0, FINISHED_CAP - 1)
          changed = true
        end
      end
    end
  else
    local cur = redis.call('HGET', KEYS[1], 'balanceSeq')
    if (not cur) or cur <= seq then
      redis.call('HSET', KEYS[1], 'balanceSeq', seq)
      if kind == 'b' then
        local usd, points, exp = string.match(payload, '^(%S+) (%S+) (%S+)$')
        local old = redis.call('HMGET', KEYS[1], 'usdCredit', 'points', 'exp')
        if old[1] ~= usd or old[2] ~= points or old[3] ~= exp then
          redis.call('HSET', KEYS[1], 'usdCredit', usd, 'points', points, 'exp', exp)
          changed = true
        end
      elseif redis.call('HDEL', KEYS[1], 'usdCredit', 'points', 'exp') > 0 then
        changed = true
      end
    end
  end
end
local cap = tonumber(ARGV[3])
if redis.call('HLEN', KEYS[3]) > cap then
  local all = redis.call('HGETALL', KEYS[3])
  local gone = {}
  for i = 1, #all, 2 do
    if redis.call('HEXISTS', KEYS[2], all[i]) == 0 then
      gone[#gone + 1] = {all[i + 1], all[i]}
    end
  end
  table.sort(gone, function(a, b) return a[1] < b[1] end)
  local excess = redis.call('HLEN', KEYS[3]) - math.floor(cap / 2)
  for i = 1, math.min(excess, #gone) do
    redis.call('HDEL', KEYS[3], gone[i][2])
  end
end
if not changed then return 0 end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[2])
redis.call('PUBLISH', ARGV[1], version)
return version
""".replace("$FINISHED_CAP", str(FINISHED_CAP))

# KEYS: user, tasks, seq. ARGV: channel, updatedAt, now (ms), min seq ('' for none).
# Removes live tasks that went stale by now and, when a min seq is given (end of a resync),
# tasks and the balance last written before it. Returns {version or 0, next deadline or -1,
# removed generation ids...}.
SWEEP_LUA = """
local now = tonumber(ARGV[3])
local min_seq = ARGV[4]
local removed = {}
local next_deadline = -1
local tasks = redis.call('HGETALL', KEYS[2])
for i = 1, #tasks, 2 do
  local id, record = tasks[i], tasks[i + 1]
  local stale_at = tonumber(string.match(record, '"staleAt":(%d+)'))
  local seq = redis.call('HGET', KEYS[3], id)
  if (stale_at and stale_at <= now) or (min_seq ~= '' and ((not seq) or seq < min_seq)) then
    redis.call('HDEL', KEYS[2], id)
    removed[#removed + 1] = id
  elseif stale_at and (next_deadline < 0 or stale_at < next_deadline) then
    next_deadline = stale_at
  end
end
local changed = #removed > 0
if min_seq ~= '' then
  local seq = redis.call('HGET', KEYS[1], 'balanceSeq')
  if seq and seq < min_seq then
    redis.call('HDEL', KEYS[1], 'balanceSeq')
    if redis.call('HDEL', KEYS[1], 'usdCredit', 'points', 'exp') > 0 then changed = true end
  end
end
local version = 0
if changed then
  version = redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('HSET', KEYS[1], 'updatedAt', ARGV[2])
  redis.call('PUBLISH', ARGV[1], version)
end
local result = {version, next_deadline}
for i = 1, #removed do result[#result + 1] = removed[i] end
return result
"""


# KEYS: one owner-index entry. ARGV: seq, owner ('' once the document left), past owners
# (comma-separated), ttl (s). The entry is "seq|owner|past owners"; it only moves forward.
OWN_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^([^|]*)') > ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3], 'EX', ARGV[4])
return 1
"""


def _owner_entry(entry: str | None) -> tuple[str, str, list[str]]:
    """(seq, owner or '', past owners) of an owner-index entry; ('', '', []) when absent."""
    if entry is None:
        return "", "", []
    seq, owner, past = (entry.split("|", 2) + ["", ""])[:3]
    return seq, owner, [u for u in past.split(",") if u]


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Plan:
    """A batch's writes: ``steps`` each queue one command; user scripts start at ``first_script``."""

    users: list[str]
    steps: list[Callable[[Any], Any]]
    first_script: int


class _Draft:
    """One document's change in a batch, read against its owner entry.

    The entry is rewritten whenever what it records changes, and on every change to a document
    that left (it is then the only record of its position): only a live document changing under
    the same owner leaves it alone, which is the common case.
    """

    def __init__(self, change: Change, key: str, entry: str | None) -> None:
        self.change, self.key = change, key
        self.newest_seq, self.known_owner, self.known_past = _owner_entry(entry)
        self.op = _op(change)
        target = change.owner or ""
        self.owner_now = target if self.op[0] in ("t", "b") else ""
        past = dict.fromkeys([self.known_owner, *self.known_past, target])
        self.past = [o for o in past if o and o != self.owner_now][-PAST_OWNERS_CAP:]
        self.unchanged = (entry is not None and self.known_owner != "" and self.known_owner == self.owner_now
                          and self.past == self.known_past)
        self.needs_owner_check = self.known_owner != "" and not self.unchanged


@dataclass
class _UserOps:
    args: list[str]
    earliest_stale_at: int | None = None


class ReadModel:
    """Applies changes to the read model with a (sync) redis-py client.

    ``apply`` costs two pipelined round trips per batch however many users it touches: one to
    look up the owners of the documents in it, one to run one script per user.
    """

    def __init__(self, redis: Any, layout: Layout | None = None, tombstone_cap: int = TOMBSTONE_CAP) -> None:
        self.redis = redis
        self.layout = layout or Layout()
        self.tombstone_cap = tombstone_cap
        self._apply = redis.register_script(APPLY_LUA)
        self._sweep = redis.register_script(SWEEP_LUA)
        self._own = redis.register_script(OWN_LUA)

    def apply(self, changes: Iterable[Change], now_iso: str) -> dict[str, int]:
        """Apply a batch; returns {user: new version} for users whose snapshot changed."""
        plan = self.plan(changes, now_iso)
        if not plan.steps:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for step in plan.steps:
            step(pipe)
        results = pipe.execute()
        scripts = results[plan.first_script : plan.first_script + len(plan.users)]
        return {uid: int(version) for uid, version in zip(plan.users, scripts) if int(version)}

    def plan(self, changes: Iterable[Change], now_iso: str) -> "Plan":
        """The writes of a batch, in order: deadlines, owner entries, one script per user.

        Looks up the owners first (one round trip). Returns the users in the order of their
        scripts and the steps, each queueing one command on a pipeline. The order makes a batch
        cut short by a crash harmless: a replay writes whatever an owner entry does not show as
        done, and a deadline or entry ahead of its user's snapshot only costs a needless look.
        """
        latest = _coalesce(changes)
        if not latest:
            return Plan([], [], 0)
        owner_keys = [self._owner_key(change) for change in latest]
        drafts = [_Draft(change, key, entry) for change, key, entry in zip(latest, owner_keys, self._get_many(owner_keys))]
        self._check_with_current_owner([d for d in drafts if d.needs_owner_check])

        per_user: dict[str, _UserOps] = {}
        entry_steps: list[Callable[[Any], Any]] = []
        for draft in drafts:
            change = draft.change
            if draft.newest_seq > change.seq:
                continue  # a newer change to this document was applied: this one is obsolete
            target = change.owner
            # Every user the document was ever recorded under, but its owner now, must not show
            # it: a crash may have cut the batch that recorded a move or a removal short.
            for old_owner in (draft.known_owner, *draft.known_past):
                if old_owner and old_owner != target:
                    self._add_op(per_user, old_owner, _gone_op(change))
            if target:
                self._add_op(per_user, target, draft.op)
                # A task already in the snapshot only moves its deadline later: no ZADD needed.
                if draft.op[0] == "t" and not draft.unchanged and isinstance(change, TaskChange) and change.stale_at_ms:
                    ops = per_user[target]
                    if ops.earliest_stale_at is None or change.stale_at_ms < ops.earliest_stale_at:
                        ops.earliest_stale_at = change.stale_at_ms
            if not draft.unchanged:
                args = [change.seq, draft.owner_now, ",".join(draft.past), OWNER_TTL_S if draft.owner_now else GONE_TTL_S]
                entry_steps.append(lambda pipe, key=draft.key, args=args: self._own(keys=[key], args=args, client=pipe))

        users = list(per_user)
        steps: list[Callable[[Any], Any]] = []
        for uid in users:
            deadline = per_user[uid].earliest_stale_at
            if deadline is not None:
                steps.append(lambda pipe, uid=uid, d=deadline: pipe.zadd(self.layout.deadlines, {uid: d}, lt=True))
        steps.extend(entry_steps)
        first_script = len(steps)
        for uid in users:
            keys = self.layout.user_keys(uid)
            args = [self.layout.channel(uid), now_iso, self.tombstone_cap, *per_user[uid].args]
            steps.append(lambda pipe, keys=keys, args=args: self._apply(keys=keys, args=args, client=pipe))
        return Plan(users, steps, first_script)

    def _check_with_current_owner(self, drafts: list["_Draft"]) -> None:
        """Fill in the position the current owner holds for documents that leave or move.

        An owner entry is not rewritten while a live document changes under the same owner, so
        its position can lag behind; whether a change that takes the document away is obsolete
        is decided on the owner's own position instead. One round trip, for batches with any.
        """
        if not drafts:
            return
        pipe = self.redis.pipeline(transaction=False)
        for draft in drafts:
            if isinstance(draft.change, TaskChange):
                pipe.hget(self.layout.seqs(draft.known_owner), draft.change.generation_id)
            else:
                pipe.hget(self.layout.user(draft.known_owner), "balanceSeq")
        for draft, seq in zip(drafts, pipe.execute()):
            if seq is not None:
                draft.newest_seq = max(draft.newest_seq, _decode(seq))

    def sweep(self, now_ms: int, now_iso: str, users: Iterable[str] | None = None, min_seq: str = "") -> dict[str, int]:
        """Remove stale tasks (and, with ``min_seq``, whatever a resync did not see).

        Without ``users``, sweeps the users whose earliest deadline has passed. Returns
        {user: new version} for users whose snapshot changed.
        """
        if users is None:
            users = [_decode(u) for u in self.redis.zrangebyscore(self.layout.deadlines, "-inf", now_ms)]
        users = list(users)
        if not users:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for uid in users:
            self._sweep(
                keys=self.layout.user_keys(uid),
                args=[self.layout.channel(uid), now_iso, now_ms, min_seq],
                client=pipe,
            )
        results = pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        versions: dict[str, int] = {}
        for uid, (version, next_deadline, *removed) in zip(users, results):
            if int(version):
                versions[uid] = int(version)
            for generation_id in removed:
                pipe.delete(self.layout.task_owner(_decode(generation_id)))
            if int(next_deadline) < 0:
                pipe.zrem(self.layout.deadlines, uid)
            else:
                pipe.zadd(self.layout.deadlines, {uid: int(next_deadline)})
        pipe.execute()
        return versions

    def known_users(self, batch: int = 1000) -> Iterable[str]:
        """Every user with state in the read model (SCAN; for resync sweeps and tools)."""
        for key in self.redis.scan_iter(match=self.layout.user_pattern(), count=batch):
            yield self.layout.user_of_key(_decode(key))

    def _owner_key(self, change: Change) -> str:
        if isinstance(change, TaskChange):
            return self.layout.task_owner(change.generation_id)
        return self.layout.balance_owner(change.doc_id)

    def _get_many(self, keys: list[str]) -> list[str | None]:
        # The keys live in different cluster slots: a cluster client splits the MGET by slot.
        mget = getattr(self.redis, "mget_nonatomic", self.redis.mget)
        return [None if v is None else _decode(v) for v in mget(keys)]

    @staticmethod
    def _add_op(per_user: dict[str, _UserOps], uid: str, op: tuple[str, str, str, str]) -> None:
        ops = per_user.get(uid)
        if ops is None:
            ops = per_user[uid] = _UserOps(args=[])
        ops.args.append("\x1f".join(op))


def _coalesce(changes: Iterable[Change]) -> list[Change]:
    """Keep the latest change per document (ties: the later one), in first-seen order."""
    latest: dict[tuple[str, str], Change] = {}
    for change in changes:
        key = ("t", change.generation_id) if isinstance(change, TaskChange) else ("b", change.doc_id)
        kept = latest.get(key)
        if kept is None or kept.seq <= change.seq:
            latest[key] = change
    return list(latest.values())


def _op(change: Change) -> tuple[str, str, str, str]:
    if isinstance(change, TaskChange):
        if change.task is None:
            return ("x", change.generation_id, change.seq, "")
        if not change.task.live:
            return ("x", change.generation_id, change.seq, finished_record(change.task))
        payload = task_record(change.task, change.expected_duration_ms, change.stale_at_ms)
        return ("t", change.generation_id, change.seq, payload)
    if change.balance is None:
        return ("g", change.doc_id, change.seq, "")
    balance = change.balance
    return ("b", change.doc_id, change.seq, f"{balance.usd_credit} {balance.points} {balance.exp}")


def _gone_op(change: Change) -> tuple[str, str, str, str]:
    if isinstance(change, TaskChange):
        return ("x", change.generation_id, change.seq, "")
    return ("g", change.doc_id, change.seq, "")


# ---------------------------------------------------------------------------- reading


def queue_snapshot_read(pipe: Any, layout: Layout, uid: str) -> None:
    """Queue the three reads of one user's snapshot on a transactional pipeline (one round trip)."""
    pipe.hgetall(layout.user(uid))
    pipe.hgetall(layout.tasks(uid))
    pipe.lrange(layout.finished(uid), 0, -1)


def decode_snapshot(uid: str, user: dict, tasks: dict, finished: list, now_ms: int) -> dict[str, Any]:
    """The snapshot as the API serves it, hiding tasks that went stale since the last sweep and
    finished tasks older than ``FINISHED_SHOWN_MS``."""
    user = {_decode(k): _decode(v) for k, v in user.items()}
    recent = []
    for raw in finished:
        record = json.loads(raw)
        finished_ms = record.pop("finishedAtMs", None)
        if finished_ms is None or now_ms - finished_ms <= FINISHED_SHOWN_MS:
            recent.append(record)
    live = []
    for raw in tasks.values():
        record = json.loads(raw)
        stale_at = record.pop("staleAt", None)
        if stale_at is not None and stale_at <= now_ms:
            continue
        live.append(record)
    live.sort(key=lambda t: (t.get("startedAt") or "", t["generationId"]))
    return {
        "masterAccountId": uid,
        "version": int(user.get("version", 0)),
        "updatedAt": user.get("updatedAt"),
        "balance": {
            "usdCredit": user.get("usdCredit", "0"),
            "points": int(user.get("points", 0)),
            "exp": int(user.get("exp", 0)),
        },
        "liveTasks": live,
        "recentlyFinished": recent,
    }


def read_snapshot(redis: Any, uid: str, now_ms: int, layout: Layout | None = None) -> dict[str, Any]:
    """One user's snapshot with a sync client, in one round trip (MULTI/EXEC: never half a change)."""
    layout = layout or Layout()
    pipe = redis.pipeline(transaction=True)
    queue_snapshot_read(pipe, layout, uid)
    user, tasks, finished = pipe.execute()
    return decode_snapshot(uid, user, tasks, finished, now_ms)


async def aread_snapshot(redis: Any, uid: str, now_ms: int, layout: Layout | None = None) -> dict[str, Any]:
    """:func:`read_snapshot` for a ``redis.asyncio`` client."""
    layout = layout or Layout()
    async with redis.pipeline(transaction=True) as pipe:
        queue_snapshot_read(pipe, layout, uid)
        user, tasks, finished = await pipe.execute()
    return decode_snapshot(uid, user, tasks, finished, now_ms)


async def aread_heartbeat_ms(redis: Any, layout: Layout | None = None) -> int | None:
    """The projector's last heartbeat (epoch ms, ``heartbeatMs`` of the health hash); None when absent."""
    layout = layout or Layout()
    value = await redis.hget(layout.health, "heartbeatMs")
    if value is None:
        return None
    try:
        return int(_decode(value))
    except ValueError:
        return None
