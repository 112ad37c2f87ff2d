"""``projector verify --repair``: re-project exactly the documents a verify found differing.

A plan is made from a fresh read of those documents, written at the position just after the
source's clock S taken *before* that read: where a resync writes too (a new change stream starts
there), so no position the projector stored legitimately is past it, while a change after S has a
position at least as late and wins. A change in that very tick that the projector applies before
the repair ties with it, and the repair's older read could win: :func:`repair` therefore checks the
repaired users again and repairs once more while they differ. It is written through the projector's write path
(:class:`readmodel.ReadModel`: owner entries, one script per user, versions, ``SPUBLISH``):

1. positions that cannot be (past the source's clock, or not a position) are removed first, or
   they would make the writer skip every real change to their document (fenced like the others,
   each only while it still holds the value the plan read: ``readmodel/scripts/fenced_clear.lua``);
2. each document is taken away from the users that show it but do not own it;
3. each document's state is applied under its owner (a deleted or finished one is removed);
4. a recently finished entry that differs from its (finished) document is rewritten in place with
   the document's outcome (``readmodel/scripts/refinish.lua``, fenced like the others);
5. every repaired user's snapshot is swept with a version jump, announced on pub/sub: a deleted
   key or a restored dump took its version back, and an SSE client ignores a version it had.

Nothing is *added* to the recently finished list: it holds what the projector saw finish (a task
that finished before a resync, or while its user's snapshot was being rebuilt, is rightly absent),
so an entry missing from it cannot be told from one never recorded, and verify does not report one.

Every write step runs only while ``fenced()`` passes (it raises once the lease is lost). The plan
is built on the caller's thread; :meth:`Plan.apply` runs where the lease holder writes (the
worker's writer thread).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from readmodel import BalanceChange, Change, Layout, ReadModel, TaskChange, position, scripts
from readmodel.changes import FINISHED, GONE
from readmodel.fences import token_arg
from readmodel.text import text

from .durations import Durations
from .projection import Rejected, document_change
from .settings import Settings
from .times import iso
from .values import document_id
from .verify import Report, Verifier
from .verify_compare import ECONOMY, TASKS, Difference

log = logging.getLogger(__name__)

VERSION_JUMP = 1000  # as after a Redis failover, and at least to the clock in ms (sweep.lua): past any version seen


@dataclass
class Plan:
    """The writes that repair a set of differences."""

    layout: Layout
    clear: list[tuple[str, str, str]] = field(default_factory=list)  # (key, hash field or '' for the key, value read)
    take_away: list[Change] = field(default_factory=list)
    states: list[Change] = field(default_factory=list)
    finished: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (user, entry, wrong entries)
    users: set[str] = field(default_factory=set)
    documents: int = 0

    def apply(self, redis: Any, fenced: Callable[[], None], clock: Callable[[], float],
              fence: int | None = None) -> dict[str, int]:
        """Write the plan; returns {user: new version}. ``fenced()`` raises when the lease is lost;
        the scripts refuse ``fence`` (the lease's token) once a newer leader has written."""
        model = ReadModel(redis, self.layout)
        now = clock()
        now_iso = iso(datetime.fromtimestamp(now, UTC)) or ""
        if self.clear:
            fenced()
            token = token_arg(fence)

            def clear(pipe: Any, group: list[int]) -> None:
                keys = [self.clear[i][0] for i in group]
                args = [token, *(a for i in group for a in self.clear[i][1:])]
                scripts.FENCED_CLEAR.queue(pipe, keys + model.fences.keys(keys[0]), args)

            model.run([partial(clear, group=group)
                       for group in scripts.slot_groups(redis, (key for key, _, _ in self.clear), 100)])
        for changes in (self.take_away, self.states):
            if changes:
                fenced()
                model.apply(changes, now_iso, fence)
        if self.finished:
            fenced()
            token = token_arg(fence)

            def rewrite(pipe: Any) -> None:
                for uid, entry, wrong in self.finished:
                    key = self.layout.finished(uid)
                    scripts.REFINISH.queue(pipe, [key, *model.fences.keys(key)], [token, entry, *wrong])

            model.run([rewrite])
        fenced()
        return model.sweep(int(now * 1000), now_iso, users=sorted(self.users), version_jump=VERSION_JUMP, fence=fence)


def plan(verifier: Verifier, drift: list[Difference], raw_ids: dict[tuple[str, str], Any]) -> Plan:
    """Read the differing documents again and plan their re-projection."""
    settings: Settings = verifier.settings
    layout = settings.layout
    result = Plan(layout)
    seconds, _, inc = verifier.cluster_time().partition(".")  # before the read: see the module docstring
    seq = position(int(seconds), int(inc) + 1)
    wanted: dict[str, dict[str, set[str]]] = {TASKS: {}, ECONOMY: {}}  # collection -> id -> users showing it
    wrong_finished = {(d.user, d.doc) for d in drift if d.kind == "finished-different"}
    ahead: list[tuple[str, str]] = []  # (key, hash field or '' for the key) holding a position past the clock
    for diff in drift:
        result.users.add(diff.user)
        if diff.kind == "position-ahead":
            if diff.collection == TASKS:
                ahead += [(layout.seqs(diff.user), diff.doc), (layout.task_owner(diff.doc), "")]
            else:
                ahead.append((layout.user(diff.user), "balanceSeq"))
                if diff.doc:
                    ahead.append((layout.balance_owner(diff.doc), ""))
        if diff.doc and diff.collection:
            wanted[diff.collection].setdefault(diff.doc, set()).add(diff.user)
    result.clear = _read(verifier.redis, ahead)
    durations = Durations.load(verifier.redis, layout)
    now_ms = int(verifier.clock() * 1000)
    for collection, ids in wanted.items():
        found = {document_id(doc.get("_id")): doc for doc in verifier.fetch(collection, ids, raw_ids)}
        for doc_id, users in ids.items():
            doc = found.get(doc_id)
            change = document_change(collection, doc, doc.get("_id") if doc else doc_id, seq, now_ms, settings.rules,
                                     durations)
            if isinstance(change, Rejected):
                log.warning("verify: %s %s cannot be projected (%s); left as it is", collection, doc_id, change.reason)
                continue
            result.documents += 1
            owner = change.owner if doc is not None else None
            for uid in sorted(users - {owner}):
                result.take_away.append(_gone(collection, doc_id, seq, uid))
            if owner:
                result.users.add(owner)
                result.states.append(change)
            if isinstance(change, TaskChange) and change.state == FINISHED and change.record:
                for uid in sorted(u for u in users if (u, doc_id) in wrong_finished):
                    wrong = _entries_of(verifier.redis, layout.finished(uid), doc_id, change.record)
                    if wrong:
                        result.finished.append((uid, change.record, wrong))
    return result


def _read(redis: Any, places: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(key, field, value) of each place that holds a value now: the repair deletes it only while it
    still holds that value (fenced_clear.lua)."""
    if not places:
        return []
    pipe = redis.pipeline(transaction=False)
    for key, name in places:
        pipe.hget(key, name) if name else pipe.get(key)
    return [(key, name, text(value)) for (key, name), value in zip(places, pipe.execute()) if value is not None]


def _entries_of(redis: Any, key: str, generation_id: str, record: str) -> list[str]:
    """The entries of a recently finished list about ``generation_id`` that differ from ``record``."""
    found = []
    for raw in redis.lrange(key, 0, -1):
        entry = text(raw)
        try:
            about = json.loads(entry).get("generationId")
        except (ValueError, AttributeError):
            continue  # unreadable: verify does not compare it either
        if about == generation_id and entry != record:
            found.append(entry)
    return found


def _gone(collection: str, doc_id: str, seq: str, uid: str) -> Change:
    if collection == TASKS:
        return TaskChange(generation_id=doc_id, seq=seq, owner=uid, state=GONE)
    return BalanceChange(doc_id=doc_id, seq=seq, owner=uid)


def repair(verifier: Verifier, report: Report, write: Callable[[Plan], Any], attempts: int = 3) -> tuple[int, Report]:
    """Plan and ``write`` the repair of ``report``'s drift, check the repaired users again, and
    repeat while they still differ. Returns (documents re-projected, the last check)."""
    drift, raw_ids, documents = report.drift, report.raw_ids, 0
    after = report
    for _attempt in range(attempts):
        planned = plan(verifier, drift, raw_ids)
        write(planned)
        documents += planned.documents
        after = verifier.check(sorted(planned.users))
        if not after.drift:
            break
        drift, raw_ids = after.drift, after.raw_ids
    return documents, after
