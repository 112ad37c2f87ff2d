"""Every Redis key and channel livestatus uses, and the positions that order changes.

Per user ``U`` (the hash tag ``{U}`` keeps one user's keys in one Redis Cluster slot, and every
script touches one user only):

``P:{U}:user``     hash: ``version``, ``updatedAt``, ``usdCredit``, ``points``, ``exp``, ``balanceSeq``,
                   ``balanceDoc`` (the userEconomy document the balance came from)
``P:{U}:tasks``    hash: generation id -> live task record (JSON, see :mod:`readmodel.records`)
``P:{U}:seq``      hash: generation id -> position of the last change applied to it (live *and*
                   gone tasks: the entries of gone tasks are tombstones, capped per user)
``P:{U}:finished`` list: the user's last tasks to finish, newest first (finished records)
``P:{U}:changes``  pub/sub channel: the new version, published in the same script as the change

Shared keys: ``P:owner:{gen:ID}`` / ``P:owner:{econ:ID}`` hold ``"seq|owner|past owners"`` of a
task or balance document (delete events carry no masterAccountId; the owner is empty once the
document left); ``P:deadlines`` is a sorted set: user -> earliest moment one of their live tasks
goes stale. The projector's own keys share the hash tag ``{projector}``; when the stream is split
between N projector processes (:class:`Partition`), process K's are under ``{projector:KofN}``.

``P`` is the key prefix (``KEY_PREFIX``, default ``ls``); tests use a prefix of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,32}$")
# A user id (masterAccountId) as keys hold it: no braces, so it stays one hash tag.
USER_ID_PATTERN = r"^[A-Za-z0-9:_.\-]{1,128}$"
USER_ID_RE = re.compile(USER_ID_PATTERN)


def position(seconds: int, increment: int) -> str:
    """A sortable position from a cluster time (time and increment): string order is time order."""
    return f"{seconds:010d}.{increment:010d}"


HASH_MODULUS = 2147483647  # 2^31 - 1: every step stays exact in Lua's doubles


def partition_hash(doc_id: str) -> int:
    """A polynomial hash of the id's UTF-8 bytes, the same in Python and in Redis's Lua 5.1 (no
    library hash exists in both: fakeredis's Lua has no ``redis.sha1hex``)."""
    value = 0
    for byte in doc_id.encode():
        value = (value * 31 + byte) % HASH_MODULUS
    return value


PARTITION_RE = re.compile(r"^\s*(\d{1,3})\s*/\s*(\d{1,3})\s*$")


@dataclass(frozen=True)
class Partition:
    """Which documents one projector process owns when N processes split the stream: those whose
    id (as the read model stores it) hashes to ``index`` modulo ``count``. The hash is
    :func:`partition_hash`, which ``sweep.lua`` computes too. 0/1 owns everything; a document with no
    usable id counts as partition 0's (in ``sweep.lua`` too), so exactly one partition handles it."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.count <= 256 and 0 <= self.index < self.count):
            raise ValueError(f"a partition is K/N with 0 <= K < N <= 256 (got {self.index}/{self.count})")

    @classmethod
    def parse(cls, value: str) -> Partition:
        """``"K/N"``, e.g. ``"0/2"``; ValueError naming the expected form otherwise."""
        match = PARTITION_RE.match(value)
        if not match:
            raise ValueError(f"a partition is written K/N, e.g. 0/2 (got {value!r})")
        return cls(int(match[1]), int(match[2]))

    def owns(self, doc_id: str | None) -> bool:
        if self.count == 1:
            return True
        if doc_id is None:
            return self.index == 0
        return partition_hash(doc_id) % self.count == self.index

    @property
    def tag(self) -> str:
        """The hash tag of this process's own keys."""
        return "projector" if self.count == 1 else f"projector:{self.index}of{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class Layout:
    """Key names under one prefix (the projector's own keys: those of one partition)."""

    def __init__(self, prefix: str = "ls", partition: Partition = Partition()) -> None:
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"a key prefix is 1-32 letters, digits or any of _ . : - (got {prefix!r})")
        self.prefix = prefix
        self.partition = partition
        own = f"{prefix}:{{{partition.tag}}}"
        self.deadlines = f"{prefix}:deadlines"
        self.checkpoint = f"{own}:checkpoint"  # hash: resume token, position, fence, lagMs
        self.applied = f"{own}:applied"  # pub/sub channel: "position lagMs atMs" each time the checkpoint moves
        self.leader = f"{own}:leader"  # string with TTL: the lease holder's id
        self.fence = f"{own}:fence"  # counter: fencing token of each new lease
        self.health = f"{own}:health"  # hash: heartbeat, lag, rates, counters
        self.resync_request = f"{own}:resync"  # string: set by `projector resync`
        self.deadletters = f"{prefix}:deadletters"  # stream: rejected documents with reasons
        self.durations = f"{prefix}:durations"  # hash: toolId -> typical duration (ms)

    def user(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:user"

    def tasks(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:tasks"

    def seqs(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:seq"

    def finished(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:finished"

    def channel(self, uid: str) -> str:
        return f"{self.prefix}:{{{uid}}}:changes"

    def user_keys(self, uid: str) -> list[str]:
        """The keys of one user's snapshot, in the order the scripts take them."""
        return [self.user(uid), self.tasks(uid), self.seqs(uid), self.finished(uid)]

    def channel_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:changes"

    def is_channel(self, channel: str) -> bool:
        return channel.startswith(f"{self.prefix}:{{") and channel.endswith("}:changes")

    def user_of_channel(self, channel: str) -> str:
        return channel[len(self.prefix) + 2 : -len("}:changes")]

    def user_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:user"

    def tasks_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:tasks"

    def user_of_key(self, key: str) -> str:
        return key[len(self.prefix) + 2 : -len("}:user")]

    def task_owner(self, generation_id: str) -> str:
        return f"{self.prefix}:owner:{{gen:{generation_id}}}"

    def balance_owner(self, doc_id: str) -> str:
        return f"{self.prefix}:owner:{{econ:{doc_id}}}"

    def all_keys_pattern(self) -> str:
        """Every key under this prefix (for cleaning up a test's or a benchmark's keys)."""
        return f"{self.prefix}:*"
