"""Every Lua script of the project (the read model's, the lease's, the checkpoint's), read once
from its ``.lua`` file, and the one way they are run.

Scripts run by ``EVALSHA`` inside plain pipelines, on a single Redis and on a cluster alike
(redis-py's cluster pipeline refuses ``Script`` objects, so the command is queued by name). A node
that restarted or a replica promoted in a failover has an empty script cache: :func:`run` and
:func:`arun` then load every script on every master and run the pipeline once more, which is
harmless because every write here is idempotent. A command that ran the first time keeps its first
reply: run again, a script that changed something reports nothing changed (only some scripts are
missing when new code meets a Redis that cached the old ones).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from importlib.resources import files
from typing import Any

from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)

FINISHED_CAP = 10  # finished tasks remembered per user


class Lua:
    """One script: its source and SHA-1, queued on a pipeline by ``EVALSHA``. ``prelude``: the
    functions its ``body`` uses (the source is the two together)."""

    def __init__(self, body: str, prelude: str = "") -> None:
        self.body, self.prelude = body, prelude
        self.source = prelude + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def queue(self, pipe: Any, keys: list[str], args: list[Any]) -> Any:
        return pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


# A script run once per call, for many calls in ONE script run: the script's body becomes a
# function of (KEYS, ARGV), and ARGV carries each call's key count, argument count and arguments.
# Each call is as atomic as alone (the whole run is), and the replies come back as one list. An
# error reply (a fenced script's "FENCED n", given before it writes anything) ends the run with
# that error: every call of a run checks the same fence copy with the same token, so the first
# call refused means none was accepted. On a Redis Cluster every key of one run must share a slot:
# group the calls with slot_groups().
_MANY = """%s
local function one(KEYS, ARGV)
%s
end
local replies, k, a = {}, 0, 0
while a < #ARGV do
  local nkeys, nargs = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local keys, args = {}, {}
  for i = 1, nkeys do keys[i] = KEYS[k + i] end
  for i = 1, nargs do args[i] = ARGV[a + 2 + i] end
  k, a = k + nkeys, a + 2 + nargs
  local reply = one(keys, args)
  if reply == nil then reply = false end
  if type(reply) == 'table' and reply.err then return reply end
  replies[#replies + 1] = reply
end
return replies
"""

Call = tuple[list[str], list[Any]]  # one call's keys and arguments


class Many(Lua):
    """``script`` run for many calls in one ``EVALSHA`` (see ``_MANY``)."""

    def __init__(self, script: Lua) -> None:
        super().__init__(_MANY % (script.prelude, script.body))

    def queue_calls(self, pipe: Any, calls: list[Call]) -> Any:
        keys: list[str] = []
        args: list[Any] = []
        for call_keys, call_args in calls:
            keys += call_keys
            args += (len(call_keys), len(call_args), *call_args)
        return pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


def _load(name: str) -> str:
    return files(__package__).joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8")


FENCE_CHECK = _load("fence_check")  # the prelude of every fenced script (readmodel.fences)
APPLY = Lua(_load("apply").replace("$FINISHED_CAP", str(FINISHED_CAP)), FENCE_CHECK)
SWEEP = Lua(_load("sweep"), FENCE_CHECK)
OWN = Lua(_load("own"), FENCE_CHECK)
READ = Lua(_load("read"))
LEASE_ACQUIRE = Lua(_load("lease_acquire"))
LEASE_RENEW = Lua(_load("lease_renew"))
LEASE_RELEASE = Lua(_load("lease_release"))
CHECKPOINT = Lua(_load("checkpoint"))
FENCE_RAISE = Lua(_load("fence_raise"))
REFINISH = Lua(_load("refinish"), FENCE_CHECK)
SWEEP_OWNERS = Lua(_load("sweep_owners"), FENCE_CHECK)
SWEEP_DEADLINES = Lua(_load("sweep_deadlines"), FENCE_CHECK)
FENCED_CLEAR = Lua(_load("fenced_clear"), FENCE_CHECK)
HGET_MANY = Lua(_load("hget_many"))
APPLY_MANY = Many(APPLY)
ALL = (APPLY, SWEEP, OWN, READ, LEASE_ACQUIRE, LEASE_RENEW, LEASE_RELEASE, CHECKPOINT, FENCE_RAISE,
       APPLY_MANY, REFINISH, SWEEP_OWNERS, SWEEP_DEADLINES, FENCED_CLEAR, HGET_MANY)


def slot_groups(redis: Any, keys: Iterable[str], size: int) -> list[list[int]]:
    """Indexes of ``keys`` in groups of at most ``size`` that one script run can take (the first
    key of each call, say): on a Redis Cluster (a client with a slot map) only keys of one slot go
    together, in order of first appearance; on a single Redis any keys do."""
    if getattr(redis, "nodes_manager", None) is None:
        indexes = range(len(keys := list(keys)))
        return [list(indexes[i : i + size]) for i in range(0, len(keys), size)]
    groups: dict[int, list[list[int]]] = {}
    for index, key in enumerate(keys):
        chunks = groups.setdefault(key_slot(key.encode()), [[]])
        if len(chunks[-1]) >= size:
            chunks.append([])
        chunks[-1].append(index)
    return [chunk for chunks in groups.values() for chunk in chunks]


class _Attempts:
    """What :func:`run` and :func:`arun` decide after each execution, without I/O: the first run
    tolerates errors among the replies so that ``NOSCRIPT`` can be told apart (any other error is
    raised); after a ``NOSCRIPT`` the scripts are loaded and the pipeline runs once more, raising
    any error, and keeps the first run's replies of the commands that ran then."""

    def __init__(self) -> None:
        self.first: list[Any] | None = None

    @property
    def last(self) -> bool:
        return self.first is not None

    def outcome(self, replies: list[Any]) -> list[Any] | None:
        """The replies to return, or None: load the scripts and run again."""
        if self.first is not None:
            return _kept(self.first, replies)
        if not _missing_script(replies):
            return replies
        self.first = replies
        return None


def run(redis: Any, build: Callable[[Any], object]) -> list[Any]:
    """Queue commands with ``build`` on a pipeline (not a transaction) and execute it; on
    ``NOSCRIPT``, load the scripts (every master of a cluster) and run it again once."""
    attempts = _Attempts()
    while True:
        pipe = redis.pipeline(transaction=False)
        build(pipe)
        try:
            replies = attempts.outcome(pipe.execute(raise_on_error=attempts.last))
        except _UNREACHABLE:
            _read_slot_map(redis)
            raise
        if replies is not None:
            return replies
        for script in ALL:
            redis.script_load(script.source)


def _missing_script(replies: list[Any]) -> bool:
    """Whether the first error among ``replies`` is NOSCRIPT (run again); any other is raised.

    Not only the server's refusals: a cluster pipeline that lost a node mid-way (a master killed)
    returns that node's ``ConnectionError`` among the replies when told not to raise."""
    error = next((reply for reply in replies if isinstance(reply, Exception)), None)
    if error is None:
        return False
    if isinstance(error, NoScriptError):
        return True
    raise error


def _kept(first: list[Any], second: list[Any]) -> list[Any]:
    """The second run's replies, but the first run's where that one ran (not NOSCRIPT)."""
    return [b if isinstance(a, NoScriptError) else a for a, b in zip(first, second, strict=True)]


def call(redis: Any, script: Lua, keys: list[str], args: list[Any]) -> Any:
    """Run one script now and return its reply, with :func:`run`'s ``NOSCRIPT`` recovery (a
    script refused with ``NOSCRIPT`` did not run, so running it again is safe)."""
    return run(redis, lambda pipe: script.queue(pipe, keys, args))[0]


async def arun(redis: Any, build: Callable[[Any], object]) -> list[Any]:
    """:func:`run` for a ``redis.asyncio`` client."""
    attempts = _Attempts()
    while True:
        pipe = redis.pipeline(transaction=False)
        build(pipe)
        try:
            replies = attempts.outcome(await pipe.execute(raise_on_error=attempts.last))
        except _UNREACHABLE:
            await _aread_slot_map(redis)
            raise
        if replies is not None:
            return replies
        for script in ALL:
            await redis.script_load(script.source)


# A cluster pipeline that cannot reach a node refreshes the slot map only every fifth failure of
# the same pipeline object (redis-py's reinitialize_steps), and every call here builds a new one: after
# a failover the client would keep sending to the dead master forever. A direct command refreshes
# at once; so do these, before the error reaches the caller's retry.
def refresh_slot_map(redis: Any) -> None:
    """Read a cluster client's slot map again now (nothing for a single Redis)."""
    _read_slot_map(redis)


def _read_slot_map(redis: Any) -> None:
    manager = getattr(redis, "nodes_manager", None)
    if manager is not None:
        try:
            manager.initialize()
        except (RedisError, RedisClusterException):
            pass  # no node answers yet: the next failure tries again


async def _aread_slot_map(redis: Any) -> None:
    manager = getattr(redis, "nodes_manager", None)
    if manager is not None:
        try:
            await manager.initialize()
        except (RedisError, RedisClusterException):
            pass
