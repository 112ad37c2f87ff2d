"""Sweeping tasks out of the read model: stale ones, and at a resync's end what it did not see.

A sweep is two rounds of writes. :func:`remove` runs ``sweep.lua`` per group of users (their
snapshots change there, atomically with their versions); :func:`settle` then deletes the owner
entries of the removed tasks (``sweep_owners.lua``) and moves or removes the swept users' deadlines
(``sweep_deadlines.lua``). Both rounds are fenced like every write of the read model: once a newer
leader has taken over, an old leader paused between the two writes nothing in the second (it could
otherwise drop the deadline of a task the new leader just added: docs/two-writers.md). Their
conditions also hold when the fence cannot tell: a deadline is removed or moved later only while
it is the one read before the first round, an owner entry deleted only while it names the swept
user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from . import scripts
from .fences import token_arg
from .text import text

if TYPE_CHECKING:
    from .writer import ReadModel

SWEEP_GROUP = 250  # users per sweep.lua call (it loops over them itself)
SETTLE_GROUP = 100  # owner entries or deadlines per script call of the second round


@dataclass
class Swept:
    """What :func:`remove` did, for :func:`settle`: ``seen`` the deadline of each user read before
    the first round ('' when none), ``next_deadlines`` per swept user (-1: no live task left),
    ``left`` how many tasks the first round left each, ``gone`` (user, generation id) per removed
    task."""

    token: str
    now_ms: int
    seen: dict[str, str]
    versions: dict[str, int] = field(default_factory=dict)
    next_deadlines: dict[str, int] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)
    gone: list[tuple[str, str]] = field(default_factory=list)


def _score(score: float | None) -> str:
    return "" if score is None else str(int(score))


def remove(model: ReadModel, now_ms: int, now_iso: str, users: list[str] | None = None, min_seq: str = "",
           version_jump: int = 0, fence: int | None = None) -> Swept:
    """The first round: ``sweep.lua`` for ``users``, or for those whose deadline has passed by
    ``now_ms`` (see :meth:`ReadModel.sweep`)."""
    deadlines = model.layout.deadlines
    if users is None:
        seen = {text(u): _score(s) for u, s in model.redis.zrangebyscore(deadlines, "-inf", now_ms, withscores=True)}
        users = list(seen)
    else:
        seen = dict(zip(users, map(_score, model.redis.zmscore(deadlines, users)))) if users else {}
    layout = model.layout
    swept = Swept(token_arg(fence), now_ms, seen)
    if not users:
        return swept
    part = layout.partition
    groups = scripts.slot_groups(model.redis, (layout.user(uid) for uid in users), SWEEP_GROUP)
    args = [now_iso, now_ms, min_seq, version_jump, part.index, part.count, swept.token]

    def queue(pipe: Any, group: list[int]) -> Any:
        keys = [key for i in group for key in (layout.user(users[i]), layout.tasks(users[i]), layout.seqs(users[i]))]
        keys += model.fences.keys(keys[0])
        return scripts.SWEEP.queue(pipe, keys, [*args, *(layout.channel(users[i]) for i in group)])

    replies = model.run([partial(queue, group=group) for group in groups])
    for group, reply in zip(groups, replies):
        at = 0
        for i in group:
            version, next_deadline, left, count = (int(n) for n in reply[at : at + 4])
            if version:
                swept.versions[users[i]] = version
            swept.next_deadlines[users[i]] = next_deadline
            swept.left[users[i]] = left
            swept.gone.extend((users[i], text(gid)) for gid in reply[at + 4 : at + 4 + count])
            at += 4 + count
    return swept


def settle(model: ReadModel, swept: Swept) -> None:
    """The second round: the removed tasks' owner entries and the swept users' deadlines, then a
    look at the users left without one. :class:`~readmodel.fences.Fenced` (nothing of a refused
    group written) when a newer leader has written to their slot."""
    layout = model.layout
    steps: list[Callable[[Any], Any]] = []
    entries = [(layout.task_owner(gid), uid) for uid, gid in swept.gone]
    for group in scripts.slot_groups(model.redis, (key for key, _ in entries), SETTLE_GROUP):
        keys = [entries[i][0] for i in group]
        users = [swept.token, *(entries[i][1] for i in group)]
        steps.append(partial(scripts.SWEEP_OWNERS.queue, keys=keys + model.fences.keys(keys[0]), args=users))
    first_deadlines = len(steps)
    # A user with no deadline read and no live task left has nothing to write (the common case
    # of a resync's end: users that only have a balance).
    deadlines = [(uid, d) for uid, d in swept.next_deadlines.items() if d >= 0 or swept.seen[uid]]
    fence_keys = model.fences.keys(layout.deadlines)
    for i in range(0, len(deadlines), SETTLE_GROUP):
        args: list[Any] = [swept.token]
        for uid, deadline in deadlines[i : i + SETTLE_GROUP]:
            args += (uid, deadline, swept.seen[uid])
        steps.append(partial(scripts.SWEEP_DEADLINES.queue, keys=[layout.deadlines, *fence_keys], args=args))
    if not steps:
        return
    replies = model.run(steps)
    _offer_again(model, [text(uid) for reply in replies[first_deadlines:] for uid in reply], swept)


def _offer_again(model: ReadModel, users: list[str], swept: Swept) -> None:
    """Give a deadline back to each user whose deadline the second round removed or moved later
    but who shows more tasks now than the first round left.

    Another writer (a partition's leader: every partition writes the one deadlines set with a fence
    of its own) may have put a task between the two rounds: its ``ZADD ... LT`` kept the older,
    earlier deadline, which the second round then removed or moved past the new task's stale time.
    A batch offers its deadlines after its scripts have run (:meth:`ReadModel.plan`), so an offer
    that landed before the second round had its task written before this look. The deadline given
    back is the sweep's time (``LT``): the next sweep looks and sets the real one."""
    if not users:
        return
    pipe = model.redis.pipeline(transaction=False)
    for uid in users:
        pipe.hlen(model.layout.tasks(uid))
    back = {uid: swept.now_ms for uid, count in zip(users, pipe.execute()) if count > swept.left[uid]}
    if back:
        model.redis.zadd(model.layout.deadlines, back, lt=True)
