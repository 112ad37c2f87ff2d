"""``projector verify``: compare the read model with MongoDB at one consistent position.

A round reads the users' documents from MongoDB between two cluster times S (before) and E
(after), waits until the projector's checkpoint has passed E (every change up to E is in Redis),
then reads the users' keys and compares (:mod:`.verify_compare`). A difference whose document the
read model stores at a position after S changed while it was being read: it is *in flight*, not
drift, and its user is read again in the next round. A difference must also show in two
consecutive rounds before it is reported, so a write the first read could not see yet (MongoDB
may acknowledge writes out of cluster-time order for a moment) never counts as drift. A stored
position well past the source's clock cannot come from MongoDB: it is drift at once. Users still in
flight after the last round are reported as *unsettled* (written to all the time), not as drift.

Owned by the thread that calls :meth:`Verifier.check` (the CLI's main thread, or the worker's
scheduled-verify thread); MongoDB and Redis clients are thread-safe and may be shared.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo.errors import OperationFailure
from tqdm import tqdm

from readmodel import Layout, ReadModel, position
from readmodel.text import text

from .checkpoint import CheckpointStore
from .normalize import BALANCE_DOCUMENT_FIELDS, TASK_DOCUMENT_FIELDS
from .settings import Settings
from .values import document_id
from .verify_compare import ECONOMY, TASKS, Actual, Difference, Documents, compare

CHUNK = 500  # users per MongoDB query and per Redis pipeline
ROUNDS = 4


class VerifyError(Exception):
    """The comparison cannot be made (the projector is not applying, a server is unreachable)."""


@dataclass
class Report:
    """The outcome of one verify."""

    users: int = 0  # users compared
    documents: int = 0  # MongoDB documents read
    rounds: int = 0
    drift: list[Difference] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)  # users written to during every round
    position: str = ""  # the source position of the last round's reads
    raw_ids: dict[tuple[str, str], Any] = field(default_factory=dict)  # for a repair

    @property
    def drift_users(self) -> list[str]:
        return sorted({d.user for d in self.drift})

    def as_json(self) -> dict[str, Any]:
        return {"users": self.users, "documents": self.documents, "rounds": self.rounds, "position": self.position,
                "drift": [d.as_json() for d in self.drift], "unsettled": self.unsettled}


def candidates(doc_id: str) -> list[Any]:
    """The _ids a stored id may have come from (the read model keeps ids as text)."""
    ids: list[Any] = [doc_id]
    if ObjectId.is_valid(doc_id):
        ids.append(ObjectId(doc_id))
    if doc_id.lstrip("-").isdigit() and len(doc_id) < 20:
        ids.append(int(doc_id))
    return ids


class Verifier:
    """Compares one Redis read model with one MongoDB database."""

    def __init__(self, settings: Settings, redis: Any, mongo: Any, *, wait_s: float = 30.0, progress: bool = False,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings, self.redis, self.progress = settings, redis, progress
        self.layout: Layout = settings.layout
        self.db = mongo[settings.mongo_db]
        self.client = mongo
        self.names = {TASKS: settings.tasks_collection, ECONOMY: settings.economy_collection}
        self.fields = {TASKS: TASK_DOCUMENT_FIELDS, ECONOMY: BALANCE_DOCUMENT_FIELDS}
        self.wait_s, self.clock, self.sleep = wait_s, clock, sleep
        self.checkpoints = CheckpointStore(redis, self.layout)

    # ------------------------------------------------------------ who

    def all_users(self) -> list[str]:
        """Every user either side knows: owners in both collections and users in Redis."""
        found = set(ReadModel(self.redis, self.layout).known_users())
        for collection in (TASKS, ECONOMY):
            coll = self.db[self.names[collection]]
            try:
                values = coll.distinct("masterAccountId")
            except OperationFailure:  # a server without distinct: read the field of every document
                values = [doc.get("masterAccountId") for doc in coll.find({}, {"masterAccountId": 1})]
            found.update(str(v).strip() for v in values if isinstance(v, (str, ObjectId)))
        return sorted(u for u in found if u)

    def sample(self, size: float, rng: random.Random | None = None) -> list[str]:
        """``size`` users at random (a fraction when below 1), from the users in Redis and the
        owners of random documents of each collection (``$sample``: users MongoDB has and Redis
        lost are found too, without listing every owner): ``size`` documents, or that fraction of
        the collection's documents; a fraction is then of the users found. A server that refuses
        ``$sample`` gets every user listed instead."""
        rng = rng or random.Random()
        in_redis = set(ReadModel(self.redis, self.layout).known_users())
        try:
            found = set(in_redis)
            for collection in (TASKS, ECONOMY):
                coll = self.db[self.names[collection]]
                docs = size if size >= 1 else coll.estimated_document_count() * size
                picked = coll.aggregate([{"$sample": {"size": max(1, round(docs))}}, {"$project": {"masterAccountId": 1}}])
                found.update(str(d["masterAccountId"]).strip() for d in picked
                             if isinstance(d.get("masterAccountId"), (str, ObjectId)))
        except OperationFailure:
            found = set(self.all_users())
        count = self._count(len(found), size)
        users = sorted(u for u in found if u)
        return sorted(rng.sample(users, min(len(users), count)))

    @staticmethod
    def _count(total: int, size: float) -> int:
        return max(1, round(total * size) if size < 1 else int(size))

    # ------------------------------------------------------------ the check

    def check(self, users: list[str] | None = None, rounds: int = ROUNDS) -> Report:
        """Compare ``users`` (None: everyone, reading both collections whole)."""
        report = Report()
        pending: list[str] | None = users
        previous: dict[str, set[tuple[str, str, str]]] = {}
        final: dict[str, list[Difference]] = {}
        in_flight: set[str] = set()
        while report.rounds < rounds and (pending is None or pending):
            report.rounds += 1
            before, docs, actual, newest = self._round(pending, report)
            report.position = newest
            if report.rounds == 1:
                report.users = len(actual)
            again: list[str] = []
            in_flight = set()
            for uid, have in actual.items():
                diffs = compare(uid, docs.expected(uid), have, docs, newest)
                final[uid] = diffs
                keys = {(d.kind, d.collection, d.doc) for d in diffs}
                if any(before < p <= newest for d in diffs for p in d.positions):
                    in_flight.add(uid)
                    again.append(uid)
                elif diffs and not keys <= previous.get(uid, set()):
                    again.append(uid)  # not confirmed by a second read yet
                previous[uid] = keys
            pending = again
        report.unsettled = sorted(in_flight & set(pending or []))
        report.drift = [d for uid, diffs in sorted(final.items()) if uid not in report.unsettled for d in diffs]
        return report

    def _round(self, users: list[str] | None, report: Report) -> tuple[str, Documents, dict[str, Actual], str]:
        before = self.cluster_time()
        docs = Documents(self.settings.rules, int(self.clock() * 1000), self.settings.partition.owns)
        with tqdm(desc="verify: MongoDB", unit="doc", file=sys.stderr,
                  disable=None if self.progress else True,  # None: off when stderr is no terminal
                  mininterval=0.5, leave=False) as bar:
            for collection, doc in self._documents(users):
                doc_id = document_id(doc.get("_id"))
                if doc_id is not None:
                    docs.add(collection, doc, doc_id)
                report.documents += 1
                bar.update()
        after = self.cluster_time()
        self._wait_applied(after)
        known = set(ReadModel(self.redis, self.layout).known_users()) if users is None else set()
        uids = sorted(set(users) if users is not None else set(docs.users) | known)
        actual = self._read_redis(uids, docs)
        report.raw_ids.update(docs.raw_ids)
        return before, docs, actual, self.cluster_time()

    def _documents(self, users: list[str] | None) -> Iterator[tuple[str, Any]]:
        for collection in (TASKS, ECONOMY):
            coll = self.db[self.names[collection]]
            projection = dict.fromkeys(self.fields[collection], 1)
            if users is None:
                with coll.find({}, projection, batch_size=1000) as cursor:
                    for doc in cursor:
                        yield collection, doc
                continue
            for start in range(0, len(users), CHUNK):
                chunk = users[start : start + CHUNK]
                owners = chunk + [ObjectId(u) for u in chunk if ObjectId.is_valid(u)]
                with coll.find({"masterAccountId": {"$in": owners}}, projection, batch_size=1000) as cursor:
                    for doc in cursor:
                        yield collection, doc

    def fetch(self, collection: str, doc_ids: Iterable[str], raw_ids: dict[tuple[str, str], Any] | None = None,
              fields: bool = True) -> Iterator[Any]:
        """The documents with these ids (as the read model stores them; ``raw_ids`` gives the
        _ids known from a read, else every _id the text may stand for)."""
        known = raw_ids or {}
        ids = [c for doc_id in doc_ids
               for c in ([known[(collection, doc_id)]] if (collection, doc_id) in known else candidates(doc_id))]
        coll = self.db[self.names[collection]]
        projection = dict.fromkeys(self.fields[collection], 1) if fields else None
        for start in range(0, len(ids), CHUNK):
            yield from coll.find({"_id": {"$in": ids[start : start + CHUNK]}}, projection)

    def _read_redis(self, uids: list[str], docs: Documents) -> dict[str, Actual]:
        layout, actual = self.layout, {}
        with tqdm(total=len(uids), desc="verify: Redis", unit="user", file=sys.stderr,
                  disable=None if self.progress else True,  # None: off when stderr is no terminal
                  mininterval=0.5, leave=False) as bar:
            for start in range(0, len(uids), CHUNK):
                chunk = uids[start : start + CHUNK]
                pipe = self.redis.pipeline(transaction=False)
                for uid in chunk:
                    pipe.hgetall(layout.user(uid)).hgetall(layout.tasks(uid)).hgetall(layout.seqs(uid))
                    pipe.lrange(layout.finished(uid), 0, -1).zscore(layout.deadlines, uid)
                replies = pipe.execute()
                for i, uid in enumerate(chunk):
                    actual[uid] = Actual.from_replies(*replies[i * 5 : i * 5 + 5])
                bar.update(len(chunk))
        unknown = {gid for have in actual.values() for gid in have.tasks if (TASKS, gid) not in docs.raw_ids}
        for doc in self.fetch(TASKS, sorted(unknown)) if unknown else ():
            doc_id = document_id(doc.get("_id"))
            if doc_id is not None:
                docs.add(TASKS, doc, doc_id)
        self._read_owners(actual, docs)
        return actual

    def _read_owners(self, actual: dict[str, Actual], docs: Documents) -> None:
        wanted = [(uid, (TASKS, gid)) for uid in actual for gid in docs.expected(uid).tasks]
        wanted += [(uid, (ECONOMY, doc_id)) for uid in actual for doc_id in docs.expected(uid).balances]
        keys = [self.layout.task_owner(ref[1]) if ref[0] == TASKS else self.layout.balance_owner(ref[1])
                for _uid, ref in wanted]
        mget = getattr(self.redis, "mget_nonatomic", self.redis.mget)
        for start in range(0, len(keys), 1000):
            values = mget(keys[start : start + 1000])
            for (uid, ref), value in zip(wanted[start : start + 1000], values):
                actual[uid].owners[ref] = None if value is None else text(value)

    # ------------------------------------------------------------ positions

    def cluster_time(self) -> str:
        """The source's cluster time now, as a position: the ``operationTime`` of a (local) read,
        which is the newest oplog entry applied (MongoDB's
        jstests/replsets/command_response_operation_time.js)."""
        with self.client.start_session(causal_consistency=False) as session:
            self.db.command("find", self.names[TASKS], filter={"_id": None}, limit=1, singleBatch=True,
                            session=session)
            now = session.operation_time
        if now is None:
            raise VerifyError("MongoDB reported no operationTime; verify needs a replica set")
        return position(now.time, now.inc)

    def applied(self) -> str:
        checkpoint = self.checkpoints.load()
        return checkpoint.position if checkpoint else ""

    def _wait_applied(self, target: str) -> None:
        """Until the projector's checkpoint is past ``target``, the source's clock after the read.

        Strictly past: a checkpoint at a time T can be a high-water mark that covers the events
        before T only (a stream's first token, or one resumed at T), and whether the entry at T is
        a change the projector still has to apply cannot be told from its position. On a quiet
        source this waits until the clock moves: MongoDB writes a no-op to an idle oplog every
        ``periodicNoopIntervalSecs`` (10 s by default), and the change stream's post-batch token
        passes it."""
        deadline = time.monotonic() + self.wait_s
        while (applied := self.applied()) <= target:
            if time.monotonic() >= deadline:
                raise VerifyError(f"the projector has not applied past {target} within {self.wait_s:g} s "
                                  f"(its checkpoint is at {applied or 'nothing'}): is `projector run` running?")
            self.sleep(0.05)
