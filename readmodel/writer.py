"""The writer: applies batches of changes to the read model and sweeps stale tasks.

Every write goes through a per-user Lua script (:mod:`readmodel.scripts`), so one user's snapshot
changes atomically with its version and the announcement of that version. Changes carry a
position (:func:`readmodel.keys.position`); a change older than what a task or balance already
reflects is ignored, which makes applying idempotent and replaying an older stretch harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.exceptions import ResponseError

from . import scripts, sweeping
from .changes import FINISHED, LIVE, Change, TaskChange, latest_per_document
from .fences import Fences, fenced_error, is_cluster, token_arg
from .keys import Layout
from .text import text

OWNER_TTL_S = 7 * 24 * 3600  # safety net only: a live task goes stale long before
PAST_OWNERS_CAP = 8  # a generation practically never changes owner; a cap keeps entries small
GONE_TTL_S = 24 * 3600  # how long the index remembers that a document left (covers any replay)
TOMBSTONE_CAP = 2000  # per user; pruned to half, oldest first, when exceeded
GROUP = 100  # users or owner entries per script run (and per ZADD of deadlines)
HGET_GROUP = 500  # owners' positions read per hget_many.lua call


def _move_deadlines_earlier(pipe: Any, key: str, deadlines: list[tuple[str, int]]) -> Any:
    return pipe.zadd(key, dict(deadlines), lt=True)


def _owner_entry(entry: str | None) -> tuple[str, str, list[str]]:
    """(seq, owner or '', past owners) of an owner-index entry; ('', '', []) when absent."""
    if entry is None:
        return "", "", []
    seq, owner, past = [*entry.split("|", 2), "", ""][:3]
    return seq, owner, [u for u in past.split(",") if u]


@dataclass(frozen=True)
class Plan:
    """A batch's writes: ``steps`` each queue one command; user scripts start at ``first_script``,
    one per group of users (``groups``: indexes into ``users``); ``after``, the deadlines, land
    after all of them."""

    users: list[str]
    steps: list[Callable[[Any], Any]]
    first_script: int
    groups: list[list[int]]
    after: list[Callable[[Any], Any]]


class _Draft:
    """One document's change in a batch, read against its owner entry.

    The entry is rewritten whenever what it records changes, and on every change to a document
    that left (it is then the only record of its position): only a live document changing under
    the same owner leaves it alone, which is the common case.
    """

    __slots__ = ("change", "key", "known_owner", "known_past", "needs_owner_check", "newest_seq", "op", "owner_now",
                 "past", "unchanged")

    def __init__(self, change: Change, key: str, entry: str | None) -> None:
        self.change, self.key = change, key
        self.known_past: list[str]
        self.op = _op(change)
        target = change.owner or ""
        self.owner_now = target if self.op[0] in ("t", "b") else ""
        if entry is None:  # a document new to the index (the general case below, shortened)
            self.newest_seq, self.known_owner, self.known_past = "", "", []
            self.past = [target] if target and target != self.owner_now else []
            self.unchanged = self.needs_owner_check = False
            return
        self.newest_seq, self.known_owner, self.known_past = _owner_entry(entry)
        past = dict.fromkeys([self.known_owner, *self.known_past, target])
        self.past = [o for o in past if o and o != self.owner_now][-PAST_OWNERS_CAP:]
        self.unchanged = (self.known_owner != "" and self.known_owner == self.owner_now
                          and self.past == self.known_past)
        self.needs_owner_check = self.known_owner != "" and not self.unchanged


@dataclass
class _UserOps:
    args: list[str]
    earliest_stale_at: int | None = None


class ReadModel:
    """Applies changes to the read model with a (sync) redis-py client.

    ``apply`` costs two pipelined round trips per batch however many users it touches (one to
    look up the owners of the documents in it, one to run one script per user), and a third when
    a document in it leaves or moves away from an owner (to read that owner's position).
    """

    def __init__(self, redis: Any, layout: Layout | None = None, tombstone_cap: int = TOMBSTONE_CAP,
                 audit: bool = False) -> None:
        self.redis = redis
        self.layout = layout or Layout()
        self.tombstone_cap = tombstone_cap
        self.fences = Fences(redis, self.layout, audit)

    def apply(self, changes: Iterable[Change], now_iso: str, fence: int | None = None) -> dict[str, int]:
        """Apply a batch; returns {user: new version} for users whose snapshot changed. With a
        ``fence`` (the lease's token) every script checks it where its data lives and the batch
        raises :class:`~readmodel.fences.Fenced` when a newer leader has written there."""
        return self.execute(self.plan(changes, now_iso, fence))

    def execute(self, plan: Plan) -> dict[str, int]:
        """Write a :meth:`plan`; returns what :meth:`apply` returns. The plan read its documents'
        owner entries and, for those that move or leave, the position their owner holds (a user's
        ``balanceSeq``, a task's field in its owner's positions, which writes to *other* documents
        of that user change too): what was written since it was made must not change whether a
        change is obsolete. A resync's plans meet that when no earlier batch still being written
        shares a document (every change of a resync is at one position; see projector.resync)."""
        if not plan.steps:
            return {}
        if plan.after and is_cluster(self.redis):  # on another node: sent once the scripts answered
            results = self.run(plan.steps)
            self.run(plan.after)
        else:  # one connection runs its commands in order
            results = self.run(plan.steps + plan.after)
        versions: dict[str, int] = {}
        for group, replies in zip(plan.groups, results[plan.first_script :]):
            for i, version in zip(group, replies):
                if int(version):
                    versions[plan.users[i]] = int(version)
        return versions

    def plan(self, changes: Iterable[Change], now_iso: str, fence: int | None = None,
             unread: Container[str] = ()) -> Plan:
        """The writes of a batch, in order: owner entries (``own.lua`` takes a group), one script
        per user (many users per script run: :class:`readmodel.scripts.Many`), the deadlines.

        Looks up the owners first (one round trip), but for the owner entries in ``unread``: the
        caller knows each is absent, or one that no user shows, at a position no later than its
        change's (a resync into an empty read model: ``projector.resync``). Returns the users in
        the order of their scripts and the steps, each queueing one command on a pipeline. The
        order makes a batch cut short by a crash harmless: a replay writes whatever an owner entry
        does not show as done and offers every deadline again, and an entry ahead of its user's
        snapshot only costs a needless look. Deadlines go last so that a sweep of another writer
        that removes a user's deadline either comes after the offer or finds the task already
        written (:func:`readmodel.sweeping.settle` gives such a user a deadline back): one writes
        them after the other on one connection; on a cluster they are sent once the scripts
        answered.
        """
        latest = latest_per_document(changes)
        if not latest:
            return Plan([], [], 0, [], [])
        token = token_arg(fence)
        owner_keys = [self.owner_key(change) for change in latest]
        read = self._get_many(owner_keys, unread)
        drafts = [_Draft(change, key, entry) for change, key, entry in zip(latest, owner_keys, read)]
        self._check_with_current_owner([d for d in drafts if d.needs_owner_check])

        per_user: dict[str, _UserOps] = {}
        entries: list[tuple[str, list[Any]]] = []  # (owner entry key, its four arguments of own.lua)
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
                # Every live put offers its stale time (ZADD LT keeps the earliest): a task already
                # shown can move it earlier too (a document that lost updatedAt, or had it set back).
                if draft.op[0] == "t" and isinstance(change, TaskChange) and change.stale_at_ms:
                    ops = per_user[target]
                    if ops.earliest_stale_at is None or change.stale_at_ms < ops.earliest_stale_at:
                        ops.earliest_stale_at = change.stale_at_ms
            if not draft.unchanged:
                ttl = OWNER_TTL_S if draft.owner_now else GONE_TTL_S
                entries.append((draft.key, [change.seq, draft.owner_now, ",".join(draft.past), ttl]))

        users = list(per_user)
        steps: list[Callable[[Any], Any]] = []
        for group in scripts.slot_groups(self.redis, (key for key, _ in entries), GROUP):
            keys, args = [entries[i][0] for i in group], [token, *(a for i in group for a in entries[i][1])]
            steps.append(partial(scripts.OWN.queue, keys=keys + self.fences.keys(keys[0]), args=args))
        first_script = len(steps)
        groups = scripts.slot_groups(self.redis, (self.layout.user(uid) for uid in users), GROUP)
        for group in groups:
            calls = []
            fence_keys = self.fences.keys(self.layout.user(users[group[0]]))  # one slot per group
            for i in group:
                uid = users[i]
                calls.append((self.layout.user_keys(uid) + fence_keys,
                              [self.layout.channel(uid), now_iso, self.tombstone_cap, token, *per_user[uid].args]))
            steps.append(partial(scripts.APPLY_MANY.queue_calls, calls=calls))
        deadlines = [(uid, ops.earliest_stale_at) for uid, ops in per_user.items() if ops.earliest_stale_at is not None]
        offers: list[Callable[[Any], Any]] = [
            partial(_move_deadlines_earlier, key=self.layout.deadlines, deadlines=deadlines[i : i + GROUP])
            for i in range(0, len(deadlines), GROUP)]
        return Plan(users, steps, first_script, groups, offers)

    def run(self, steps: list[Callable[[Any], Any]]) -> list[Any]:
        """Execute ``steps`` (each queues one command) in one pipelined round trip per node;
        :class:`~readmodel.fences.Fenced` when a fenced script refused its caller."""
        try:
            return scripts.run(self.redis, lambda pipe: [step(pipe) for step in steps])
        except ResponseError as exc:
            fenced = fenced_error(exc)
            if fenced is not None:
                raise fenced from exc
            raise

    def _check_with_current_owner(self, drafts: list[_Draft]) -> None:
        """Fill in the position the current owner holds for documents that leave or move.

        An owner entry is not rewritten while a live document changes under the same owner, so
        its position can lag behind; whether a change that takes the document away is obsolete
        is decided on the owner's own position instead. One round trip, for batches with any, and
        one script call per slot and 500 documents (a pipelined ``HGET`` each cost the client
        more than the script's whole share).
        """
        if not drafts:
            return
        keys = [self.layout.seqs(d.known_owner) if isinstance(d.change, TaskChange) else self.layout.user(d.known_owner)
                for d in drafts]
        fields = [d.change.generation_id if isinstance(d.change, TaskChange) else "balanceSeq" for d in drafts]
        groups = scripts.slot_groups(self.redis, keys, HGET_GROUP)
        replies = self.run([partial(scripts.HGET_MANY.queue, keys=[keys[i] for i in group],
                                    args=[fields[i] for i in group]) for group in groups])
        for group, found in zip(groups, replies):
            for i, seq in zip(group, found):
                if seq is not None:
                    drafts[i].newest_seq = max(drafts[i].newest_seq, text(seq))

    def sweep(self, now_ms: int, now_iso: str, users: Iterable[str] | None = None, min_seq: str = "",
              version_jump: int = 0, fence: int | None = None) -> dict[str, int]:
        """Remove stale tasks (and, with ``min_seq``, whatever a resync did not see, of the documents
        the layout's partition owns): :mod:`readmodel.sweeping`.

        Without ``users``, sweeps the users whose earliest deadline has passed. ``version_jump``
        moves every swept user's version that far (and announces it). Returns {user: new version}
        for users whose snapshot changed. ``fence``: as for :meth:`apply`.
        """
        swept = sweeping.remove(self, now_ms, now_iso, None if users is None else list(users), min_seq,
                                version_jump, fence)
        sweeping.settle(self, swept)
        return swept.versions

    def known_users(self, batch: int = 1000) -> Iterable[str]:
        """Every user with state in the read model (SCAN; for resync sweeps and tools)."""
        for key in self.redis.scan_iter(match=self.layout.user_pattern(), count=batch):
            yield self.layout.user_of_key(text(key))

    def owner_key(self, change: Change) -> str:
        """The owner entry :meth:`plan` reads for ``change``'s document."""
        if isinstance(change, TaskChange):
            return self.layout.task_owner(change.generation_id)
        return self.layout.balance_owner(change.doc_id)

    def _get_many(self, keys: list[str], unread: Container[str] = ()) -> list[str | None]:
        """The values of ``keys``, None for those in ``unread`` (not read) or absent."""
        # The keys live in different cluster slots: a cluster client splits the MGET by slot.
        mget = getattr(self.redis, "mget_nonatomic", self.redis.mget)
        if not unread:
            return [None if v is None else text(v) for v in mget(keys)]
        wanted = [key for key in keys if key not in unread]
        found = {key: text(v) for key, v in zip(wanted, mget(wanted) if wanted else []) if v is not None}
        return [found.get(key) for key in keys]

    @staticmethod
    def _add_op(per_user: dict[str, _UserOps], uid: str, op: tuple[str, str, str, str]) -> None:
        ops = per_user.get(uid)
        if ops is None:
            ops = per_user[uid] = _UserOps(args=[])
        ops.args.append("\x1f".join(op))


def _op(change: Change) -> tuple[str, str, str, str]:
    if isinstance(change, TaskChange):
        if change.state == LIVE:
            return ("t", change.generation_id, change.seq, change.record)
        return ("x", change.generation_id, change.seq, change.record if change.state == FINISHED else "")
    if not change.record:
        return ("g", change.doc_id, change.seq, "")
    return ("b", change.doc_id, change.seq, change.record)


def _gone_op(change: Change) -> tuple[str, str, str, str]:
    if isinstance(change, TaskChange):
        return ("x", change.generation_id, change.seq, "")
    return ("g", change.doc_id, change.seq, "")
