"""Every Lua script of the project (the read model's, the lease's, the checkpoint's), read once
from its ``.lua`` file, and the one way they are run.

Scripts run by ``EVALSHA`` inside plain pipelines, on a single Redis and on a cluster alike
(redis-py's cluster pipeline refuses ``Script`` objects, so the command is queued by name). A node
that restarted or a replica promoted in a failover has an empty script cache: :func:`run` and
:func:`arun` then load every script on every master and run the pipeline once more, which is
harmless because every write here is idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)

FINISHED_CAP = 10  # finished tasks remembered per user


class Lua:
    """One script: its source and SHA-1, queued on a pipeline by ``EVALSHA``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def queue(self, pipe: Any, keys: list[str], args: list[Any]) -> Any:
        return pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


def _load(name: str) -> str:
    return files(__package__).joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8")


def _fenced(name: str) -> str:
    """A script that starts with ``fence_check`` (readmodel.fences)."""
    return _load("fence_check") + _load(name)


APPLY = Lua(_fenced("apply").replace("$FINISHED_CAP", str(FINISHED_CAP)))
SWEEP = Lua(_load("sweep"))
OWN = Lua(_fenced("own"))
READ = Lua(_load("read"))
LEASE_ACQUIRE = Lua(_load("lease_acquire"))
LEASE_RENEW = Lua(_load("lease_renew"))
LEASE_RELEASE = Lua(_load("lease_release"))
CHECKPOINT = Lua(_load("checkpoint"))
FENCE_RAISE = Lua(_load("fence_raise"))
ALL = (APPLY, SWEEP, OWN, READ, LEASE_ACQUIRE, LEASE_RENEW, LEASE_RELEASE, CHECKPOINT, FENCE_RAISE)


def run(redis: Any, build: Callable[[Any], object]) -> list[Any]:
    """Queue commands with ``build`` on a pipeline (not a transaction) and execute it; on
    ``NOSCRIPT``, load the scripts (every master of a cluster) and run it again once."""
    for attempt in (1, 2):
        pipe = redis.pipeline(transaction=False)
        build(pipe)
        try:
            replies: list[Any] = pipe.execute()
            return replies
        except _UNREACHABLE:
            _read_slot_map(redis)
            raise
        except NoScriptError:
            if attempt == 2:
                raise
            for script in ALL:
                redis.script_load(script.source)
    raise AssertionError("unreachable")


def call(redis: Any, script: Lua, keys: list[str], args: list[Any]) -> Any:
    """Run one script now and return its reply, with :func:`run`'s ``NOSCRIPT`` recovery (a
    script refused with ``NOSCRIPT`` did not run, so running it again is safe)."""
    return run(redis, lambda pipe: script.queue(pipe, keys, args))[0]


async def arun(redis: Any, build: Callable[[Any], object]) -> list[Any]:
    """:func:`run` for a ``redis.asyncio`` client."""
    for attempt in (1, 2):
        pipe = redis.pipeline(transaction=False)
        build(pipe)
        try:
            areplies: list[Any] = await pipe.execute()
            return areplies
        except _UNREACHABLE:
            await _aread_slot_map(redis)
            raise
        except NoScriptError:
            if attempt == 2:
                raise
            for script in ALL:
                await redis.script_load(script.source)
    raise AssertionError("unreachable")


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
