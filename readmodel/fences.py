"""Copies of a projector partition's fencing token next to the data, one per Redis Cluster slot.

The lease's fencing token (``Layout.fence``) lives in one slot, and a script may only touch keys
of its own slot: a script writing a user's snapshot cannot read it. So each slot holds a copy,
``P:fence:KofN:{tag}`` (``tag`` hashes to that slot, :func:`slot_tags`). A new leader raises every
copy to its token before it writes anything (:meth:`Fences.raise_all`); every fenced script
(``apply.lua``, ``own.lua``, ``checkpoint.lua`` compares the token itself) refuses a caller whose
token is below its slot's copy, and raises a copy that is below the caller's. Once a takeover's
raise has finished, no write of an older leader is accepted on any master.

On a single Redis every key is in one "slot": one copy serves all.

For tests only (``audit``), every accepted fenced write also appends ``"fence kind time"`` to an
audit list of its slot, ``P:audit:KofN:{tag}`` (``time``: the node's clock in microseconds).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from importlib.resources import files
from typing import Any

from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from . import scripts
from .keys import Layout

SLOTS = 16384
FENCED_RE = re.compile(r"FENCED (\d+)")


class Fenced(Exception):
    """A fenced write was refused: a leader with a newer fencing token has written."""

    def __init__(self, newer: int) -> None:
        super().__init__(f"refused: fencing token {newer} is newer")
        self.newer = newer


class NotReplicated(Exception):
    """Fewer replicas than required acknowledged a write the lease relies on (``WAIT``)."""


def token_arg(fence: int | None) -> str:
    """A fencing token as the fenced scripts take it: ``''`` for an unfenced caller (the check is
    skipped, fence_check.lua)."""
    return "" if fence is None else str(fence)


def fenced_error(exc: BaseException) -> Fenced | None:
    """The :class:`Fenced` a Redis error stands for (a script's ``FENCED n`` reply), or None."""
    match = FENCED_RE.search(str(exc)) if isinstance(exc, ResponseError) else None
    return Fenced(int(match[1])) if match else None


def search_tags() -> list[str]:
    """For each slot, the first hex number whose text hashes to it (how ``slot_tags.txt`` was made)."""
    tags: list[str | None] = [None] * SLOTS
    missing, n = SLOTS, 0
    while missing:
        tag = format(n, "x")
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return [t for t in tags if t is not None]


@cache
def slot_tags() -> tuple[str, ...]:
    """A hash tag per slot: ``slot_tags()[s]`` hashes to slot ``s`` (read from ``slot_tags.txt``)."""
    return tuple(files(__package__).joinpath("slot_tags.txt").read_text(encoding="ascii").split())


def is_cluster(redis: Any) -> bool:
    return hasattr(redis, "nodes_manager")


class Fences:
    """The fence copies (and audit lists) of one layout's partition over one Redis client."""

    def __init__(self, redis: Any, layout: Layout, audit: bool = False) -> None:
        self.redis = redis
        self.cluster = is_cluster(redis)
        part = layout.partition
        self._copy = f"{layout.prefix}:fence:{part.index}of{part.count}"
        self._audit = f"{layout.prefix}:audit:{part.index}of{part.count}" if audit else None
        self._home = key_slot(layout.fence.encode())  # the only slot used on a single Redis

    def slot(self, key: str) -> int:
        return key_slot(key.encode()) if self.cluster else self._home

    def keys(self, key: str) -> list[str]:
        """The fence copy of ``key``'s slot, then its audit list when auditing."""
        return self.keys_of_slot(self.slot(key))

    def keys_of_slot(self, slot: int) -> list[str]:
        tag = slot_tags()[slot]
        return [f"{self._copy}:{{{tag}}}"] + ([f"{self._audit}:{{{tag}}}"] if self._audit else [])

    def audit_pattern(self) -> str:
        return f"{self._audit}:*"

    def raise_all(self, fence: int, replicas: int | None, timeout_ms: int,
                  after_each: Callable[[], None] | None = None) -> int:
        """Raise every slot's copy to ``fence``; returns 0, or the highest copy found at or above
        ``fence`` (another leader used it: the caller must take a newer token). Each master's
        copies are followed by ``WAIT`` on the same connection: :class:`NotReplicated` when fewer
        than ``replicas`` (None: one when the slot map lists a replica) acknowledged them.
        ``after_each`` runs after each master's copies (the lease renews itself there: a raise
        over many masters can outlast the lease's TTL)."""
        highest = 0
        for client, slots, want in self._masters(replicas):
            def build(pipe: Any, slots: Iterable[int] = slots) -> None:
                for slot in slots:
                    scripts.FENCE_RAISE.queue(pipe, self.keys_of_slot(slot), [fence])
            replies, acked = self.replicated(client, build, want, timeout_ms)
            if acked < want:
                raise NotReplicated(f"{acked} of {want} replicas acknowledged in {timeout_ms} ms")
            highest = max(highest, *(int(r) for r in replies))
            if after_each is not None:
                after_each()
        return highest

    def master_of(self, key: str, replicas: int | None) -> tuple[Any, int]:
        """A client of the master serving ``key`` and how many replicas to wait for there."""
        if not self.cluster:
            return self.redis, replicas or 0
        nodes = self.redis.nodes_manager.slots_cache.get(key_slot(key.encode()))
        if not nodes:
            scripts.refresh_slot_map(self.redis)  # the next attempt reads the cluster's map again
            raise RedisClusterException(f"no master serves the slot of {key} in the slot map")
        want = (1 if len(nodes) > 1 else 0) if replicas is None else replicas
        return self.redis.get_redis_connection(nodes[0]), want

    def replicated(self, client: Any, build: Any, want: int, timeout_ms: int) -> tuple[list[Any], int]:
        """Run ``build``'s commands on one master's connection, then ``WAIT want timeout_ms`` on
        the same connection (one pipeline); their replies and how many replicas acknowledged them
        (0 when ``want`` is 0). A failure refreshes the cluster's slot map (the master may have
        changed) and is raised."""
        def queue(pipe: Any) -> None:
            build(pipe)
            if want:
                pipe.execute_command("WAIT", want, timeout_ms)
        try:
            replies = scripts.run(client, queue)
        except (RedisError, RedisClusterException):
            if self.cluster:
                scripts.refresh_slot_map(self.redis)
            raise
        if not want:
            return replies, 0
        acked = int(replies[-1])
        if acked < want and self.cluster:
            # The replica counted on may be gone for good: a too-short WAIT raises no error, and a
            # standby sends nothing else that would make redis-py read the slot map again.
            scripts.refresh_slot_map(self.redis)
        return replies[:-1], acked

    def _masters(self, replicas: int | None) -> list[tuple[Any, list[int], int]]:
        """(a client of one master, the slots it serves, replicas to wait for) per master."""
        if not self.cluster:
            return [(self.redis, [self._home], replicas or 0)]
        slots = self.redis.nodes_manager.slots_cache
        if len(slots) < SLOTS:  # a copy left unraised would let an old leader write there
            scripts.refresh_slot_map(self.redis)
            raise RedisClusterException(f"the slot map covers {len(slots)} of {SLOTS} slots")
        by_node: dict[str, tuple[Any, list[int], int]] = {}
        for slot, nodes in sorted(slots.items()):
            primary = nodes[0]
            want = (1 if len(nodes) > 1 else 0) if replicas is None else replicas
            entry = by_node.setdefault(primary.name, (self.redis.get_redis_connection(primary), [], want))
            entry[1].append(slot)
        return list(by_node.values())
