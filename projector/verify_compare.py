"""What the read model should hold for a user, what it holds, and every difference (pure).

:class:`Expected` is built from MongoDB documents with the projector's own normalization;
:class:`Actual` from the raw replies of one user's Redis keys. :func:`compare` lists where they
differ. Every :class:`Difference` carries the positions the read model stores for the document
it is about: the caller decides from them whether it is drift or a change still in flight.

What is compared, per user (``readmodel.keys``): each live task's record (the fields a reader
sees, and ``staleAt`` when the document says when it last moved), the balance (``usdCredit``,
``points``, ``exp``, ``balanceDoc``), the position entry of each live task, the owner entry of
each live task and balance document, the stale deadline, the recently finished list (its
outcome), and that a snapshot with content has a version. Not compared: ``expectedDurationMs``
and an estimated ``progressSource`` (they come from durations learned over time, not from the
document), a task's ``progressMovedAt`` (when its status or progress last moved: history the apply
script keeps, which the document's present state cannot give; a repair keeps it unless the status
or progress differ), a task's ``staleAt`` when the document has no timestamp (it came from the
change's wall time), the version's value (MongoDB knows nothing of it) and ``updatedAt``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from readmodel import position
from readmodel.records import FINISHED_SHOWN_MS, FINISHED_TASK_FIELDS, TASK_FIELDS
from readmodel.text import text, text_map

from .normalize import Balance, Rules, Task, normalize_balance, normalize_task

KINDS = (
    "task-missing", "task-extra", "task-different", "task-position-missing",
    "balance-missing", "balance-extra", "balance-different",
    "owner-missing", "owner-wrong", "deadline-missing", "finished-different", "version-missing",
    "position-ahead",
)
TASKS, ECONOMY = "tasks", "economy"


@dataclass(frozen=True)
class Difference:
    """One way a user's read model differs from MongoDB."""

    kind: str  # one of KINDS
    user: str
    collection: str  # TASKS, ECONOMY, or "" for what belongs to the user as a whole
    doc: str  # the document's id as the read model stores it ("" for the user as a whole)
    detail: str
    positions: tuple[str, ...] = ()  # what the read model stores for it (in-flight test), not shown

    def line(self) -> str:
        what = f" {'task' if self.collection == TASKS else 'balance doc'} {self.doc}" if self.doc else ""
        return f"{self.kind:<22} user {self.user}{what}: {self.detail}"

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "user": self.user, "collection": self.collection, "doc": self.doc,
                "detail": self.detail}


@dataclass
class Expected:
    """What MongoDB says a user's read model must show."""

    tasks: dict[str, Task] = field(default_factory=dict)  # live, not stale
    finished: dict[str, Task] = field(default_factory=dict)  # terminal
    balances: dict[str, Balance] = field(default_factory=dict)  # userEconomy id -> balance
    tolerated: set[str] = field(default_factory=set)  # tasks that may or may not show: stale, rejected


class Documents:
    """MongoDB documents read for a verify, turned into what each user should see."""

    def __init__(self, rules: Rules, now_ms: int, owns: Callable[[str | None], bool] = lambda _id: True) -> None:
        self.rules, self.now_ms, self.owns = rules, now_ms, owns
        self.users: dict[str, Expected] = {}
        self.task_owner: dict[str, str | None] = {}  # generation id -> owner of a live task, None otherwise
        self.raw_ids: dict[tuple[str, str], Any] = {}  # (collection, id as stored) -> the _id in MongoDB
        self.rejected = 0

    def expected(self, uid: str) -> Expected:
        return self.users.setdefault(uid, Expected())

    def add(self, collection: str, doc: Any, doc_id: str) -> None:
        """One document as read (``doc_id``: its id as the read model stores it)."""
        if not self.owns(doc_id):
            return
        self.raw_ids[(collection, doc_id)] = doc.get("_id")
        if collection == ECONOMY:
            balance = normalize_balance(doc, self.rules)
            if isinstance(balance, Balance):
                self.expected(balance.owner).balances[doc_id] = balance
            else:
                self.rejected += 1
            return
        task = normalize_task(doc, self.rules)
        if not isinstance(task, Task):
            self.rejected += 1
            self.task_owner[doc_id] = None
            owner = doc.get("masterAccountId")  # whatever the read model still shows for it is its last good state
            if isinstance(owner, str):
                self.expected(owner.strip()).tolerated.add(doc_id)
            return
        expected = self.expected(task.owner)
        self.task_owner[doc_id] = task.owner if task.live else None
        if not task.live:
            expected.finished[doc_id] = task
        elif (stale_at := self.stale_at(task)) is not None and stale_at <= self.now_ms:
            expected.tolerated.add(doc_id)  # hidden on read, swept by the worker
        else:
            expected.tasks[doc_id] = task

    def stale_at(self, task: Task) -> int | None:
        """When the task goes stale, when the document says it (else it came from a change's wall time)."""
        return None if task.last_activity_ms is None else task.last_activity_ms + self.rules.stale_after_ms


@dataclass
class Actual:
    """One user's raw read model: the replies of HGETALL user, tasks, seq, LRANGE finished, the
    deadline score and the owner entries of the documents involved."""

    user: dict[str, str]
    tasks: dict[str, dict[str, Any]]
    seqs: dict[str, str]
    finished: list[dict[str, Any]]
    deadline: float | None
    owners: dict[tuple[str, str], str | None] = field(default_factory=dict)  # (collection, id) -> entry

    @classmethod
    def from_replies(cls, user: Any, tasks: Any, seqs: Any, finished: Any, deadline: Any) -> Actual:
        return cls(text_map(user), {text(k): _json(v) for k, v in (tasks or {}).items()}, text_map(seqs),
                   [_json(v) for v in finished or []], None if deadline is None else float(deadline))


def _json(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {"unreadable": text(raw)[:80]}
    return value if isinstance(value, dict) else {"unreadable": text(raw)[:80]}


def _show(value: Any) -> str:
    return json.dumps(value)[:60]


def _task_fields(stored: dict[str, Any], task: Task, stale_at: int | None) -> list[str]:
    """The fields of a stored live task that differ from the document's, as ``name redis!=mongo``."""
    visible = task.visible
    wrong = []
    for name in TASK_FIELDS:
        have, want = stored.get(name), visible.get(name)
        if name == "progressSource" and have == "estimate" and want is None and stored.get("expectedDurationMs"):
            continue  # an estimate from a learned duration
        if have != want or name not in stored:
            wrong.append(f"{name} {_show(have)}!={_show(want)}")
    if stale_at is not None and stored.get("staleAt") != stale_at:
        wrong.append(f"staleAt {_show(stored.get('staleAt'))}!={stale_at}")
    return wrong


def _owner_of(entry: str) -> str:
    return [*entry.split("|", 2), ""][1]


def _entry_seq(entry: str | None) -> str:
    return "" if entry is None else entry.split("|", 1)[0]


AHEAD_S = 60  # a stored position this far past the source's clock cannot have come from it


def _limit(newest: str) -> str:
    """The highest position a stored one may have: a resync stores the position just after the
    source's clock (a new stream starts there) and an idle stream's high-water mark follows wall
    time, so only what lies well past the clock cannot come from the source. A position only a
    little ahead would be overtaken by the next change anyway."""
    seconds, _, _inc = newest.partition(".")
    return position(int(seconds) + AHEAD_S, 0) if seconds.isdigit() else newest


def compare(uid: str, want: Expected, have: Actual, docs: Documents, newest: str) -> list[Difference]:
    """Every difference of one user; ``newest`` is the source's cluster time after everything
    was read (a stored position more than :data:`AHEAD_S` past it, or not a position, is drift)."""
    now_ms, owns = docs.now_ms, docs.owns
    out: list[Difference] = []
    limit = _limit(newest)

    def diff(kind: str, collection: str, doc: str, detail: str, *positions: str | None) -> None:
        out.append(Difference(kind, uid, collection, doc, detail, tuple(p for p in positions if p)))

    for gid, task in want.tasks.items():
        seq, entry = have.seqs.get(gid), have.owners.get((TASKS, gid))
        stored = have.tasks.get(gid)
        if stored is None:
            diff("task-missing", TASKS, gid, f"live in MongoDB ({task.visible['status']}), not in the read model", seq,
                 _entry_seq(entry))
            continue
        wrong = _task_fields(stored, task, docs.stale_at(task))
        if wrong:
            diff("task-different", TASKS, gid, "; ".join(wrong), seq)
        if seq is None:
            diff("task-position-missing", TASKS, gid, "live task without a position entry (an older replay would overwrite it)")
        if entry is None:
            diff("owner-missing", TASKS, gid, "no owner entry (a move to another user would leave it here)", seq)
        elif _owner_of(entry) != uid:
            diff("owner-wrong", TASKS, gid, f"owner entry says {_owner_of(entry)!r} ({entry[:60]!r})", seq,
                 _entry_seq(entry))

    for gid, stored in have.tasks.items():
        if gid in want.tasks or gid in want.tolerated or not owns(gid):
            continue
        stale_at = stored.get("staleAt")
        if isinstance(stale_at, int) and stale_at <= now_ms:
            continue  # hidden on read; the worker's sweep removes it
        owner = docs.task_owner.get(gid, "")
        where = ("not in MongoDB" if owner == "" and (TASKS, gid) not in docs.raw_ids
                 else f"belongs to {owner} in MongoDB" if owner else "finished (or stale) in MongoDB")
        diff("task-extra", TASKS, gid, f"in the read model ({stored.get('status')}), {where}", have.seqs.get(gid))

    balance_doc, balance_seq = have.user.get("balanceDoc", ""), have.user.get("balanceSeq")
    stored_balance = tuple(have.user.get(name) for name in ("usdCredit", "points", "exp"))
    balance_owned = owns(balance_doc) if balance_doc else owns(None)
    if want.balances:
        for doc_id in want.balances:
            entry = have.owners.get((ECONOMY, doc_id))
            if entry is None:
                diff("owner-missing", ECONOMY, doc_id, "no owner entry for the user's balance document", balance_seq)
            elif _owner_of(entry) != uid:
                diff("owner-wrong", ECONOMY, doc_id, f"owner entry says {_owner_of(entry)!r}", balance_seq,
                     _entry_seq(entry))
        wanted = {doc_id: (b.usd_credit, str(b.points), str(b.exp)) for doc_id, b in want.balances.items()}
        doc_id = balance_doc if balance_doc in wanted else next(iter(wanted))
        if stored_balance == (None, None, None):
            diff("balance-missing", ECONOMY, doc_id, f"MongoDB has {' '.join(wanted[doc_id])}, the read model none",
                 balance_seq)
        elif stored_balance != wanted[doc_id] or balance_doc != doc_id:
            diff("balance-different", ECONOMY, doc_id,
                 f"read model {' '.join(map(str, stored_balance))} (from {balance_doc or '?'}), "
                 f"MongoDB {' '.join(wanted[doc_id])}", balance_seq)
    elif stored_balance != (None, None, None) and balance_owned:
        diff("balance-extra", ECONOMY, balance_doc, f"read model has {' '.join(map(str, stored_balance))}, "
             "MongoDB no balance document for this user", balance_seq)

    shown = [(t["staleAt"], gid) for gid, t in have.tasks.items() if isinstance(t.get("staleAt"), int)
             and t["staleAt"] > now_ms]
    if shown:
        earliest, gid = min(shown)
        if have.deadline is None or have.deadline > earliest:
            diff("deadline-missing", "", "", f"stale deadline {have.deadline} is not at or before {earliest} "
                 "(its live tasks would never be swept)", have.seqs.get(gid))

    for record in have.finished:
        gid, finished_ms = str(record.get("generationId")), record.get("finishedAtMs")
        done = want.finished.get(gid)
        if done is None or (isinstance(finished_ms, int) and now_ms - finished_ms > FINISHED_SHOWN_MS):
            continue
        visible = done.visible
        wrong = [f"{n} {_show(record.get(n))}!={_show(visible.get(n))}" for n in FINISHED_TASK_FIELDS
                 if record.get(n) != visible.get(n)]
        if wrong:
            diff("finished-different", TASKS, gid, "recently finished entry: " + "; ".join(wrong), have.seqs.get(gid))

    if (have.tasks or stored_balance != (None, None, None)) and not have.user.get("version", "").isdigit():
        diff("version-missing", "", "", f"the snapshot has content but version {have.user.get('version')!r}")

    for gid, seq in have.seqs.items():
        if seq > limit and owns(gid):
            diff("position-ahead", TASKS, gid, f"position {seq[:40]!r} is past the source's clock {newest}")
    if balance_seq is not None and balance_seq > limit and balance_owned:
        diff("position-ahead", ECONOMY, balance_doc, f"balance position {balance_seq[:40]!r} is past {newest}")
    for (collection, doc_id), entry in have.owners.items():
        if entry is not None and _entry_seq(entry) > limit:
            diff("position-ahead", collection, doc_id, f"owner entry {entry[:40]!r} is past {newest}")
    return out
