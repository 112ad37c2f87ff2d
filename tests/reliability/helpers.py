"""The reliability suite's writer and its exact comparison of read model and documents."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import ClassVar

from bson import Decimal128, Int64

from projector.values import document_id
from tests.capture_helpers import DB, ECONOMY, TASKS, actual_state, expected_state, iso_ago, task_doc, without_empty
from tests.test_worker_process import Writer

PROGRESS_SHAPES = [
    lambda r: {"progress": round(r.random(), 2)},
    lambda r: {"progress": f"{r.randint(0, 100)}%"},
    lambda r: {"progress": {"current": r.randint(0, 9), "total": 10}},
    lambda r: {"progress": {"percent": r.randint(0, 100)}},
    lambda r: {"progressPercent": r.randint(0, 100)},
    lambda r: {"metadata": {"progressPercent": r.random() * 100}},
    lambda r: {"currentStep": r.randint(0, 5), "totalSteps": 5},
    lambda r: {"progress": float("nan")},  # garbage: skipped, not fatal
]
TERMINAL = ["completed", "failed", "cancelled by user", "Payment-Failed", "timeout", "succeeded"]
LIVE = ["pending", "processing", "running", "queued", "Waiting", "rendering"]  # the last is unknown: live


def now_iso() -> str:
    """Tasks start now, so none is stale whatever day the suite runs."""
    return iso_ago(0)


class MixedWriter(Writer):
    """The process tests' writer with the full mix: progress shapes, terminal transitions,
    replacements, deletes, Decimal128 ``$inc`` on balances, and rare owner moves."""

    USERS: ClassVar[list[str]] = [f"u{i}" for i in range(12)]

    def __init__(self, standin, seed: int, limit: int, pause_s: float = 0.002) -> None:
        super().__init__(standin, seed)
        self.limit = limit
        self.pause_s = pause_s
        self.moved_balances = 0

    def seed(self) -> None:
        for i, uid in enumerate(self.USERS):
            self.standin.insert(DB, ECONOMY, {"_id": f"e{i}", "masterAccountId": uid,
                                              "usdCredit": Decimal128("1.000000"), "exp": Int64(0)})
        for n in range(60):
            self.insert(f"s{n}")

    def insert(self, gid: str) -> None:
        extra = self.random.choice(PROGRESS_SHAPES)(self.random) if self.random.random() < 0.5 else {}
        self.standin.insert(DB, TASKS, task_doc(gid, self.random.choice(self.USERS), status=self.random.choice(LIVE),
                                                requestTimestamp=now_iso(), **extra))
        self.live.append(gid)

    def one(self) -> None:
        r, n, rnd = self.random.random(), self.count, self.random
        if r < 0.22 or not self.live:
            self.insert(f"w{n}")
        elif r < 0.50:
            self.standin.update(DB, TASKS, rnd.choice(self.live), set=rnd.choice(PROGRESS_SHAPES)(rnd))
        elif r < 0.60:
            gid = self.live.pop(rnd.randrange(len(self.live)))
            self.standin.update(DB, TASKS, gid, set={"status": rnd.choice(TERMINAL),
                                                     "responseTimestamp": now_iso()})
        elif r < 0.68:
            self.standin.delete(DB, TASKS, self.live.pop(rnd.randrange(len(self.live))))
        elif r < 0.75:
            gid = rnd.choice(self.live)
            owner = (self.standin.get(DB, TASKS, gid) or {}).get("masterAccountId", self.USERS[0])
            self.standin.replace(DB, TASKS, gid, task_doc(gid, owner, status=rnd.choice(LIVE), requestTimestamp=now_iso(),
                                                          **rnd.choice(PROGRESS_SHAPES)(rnd)))
        elif r < 0.76:  # a task moves to another user (rare)
            gid = rnd.choice(self.live)
            self.standin.update(DB, TASKS, gid, set={"masterAccountId": rnd.choice(self.USERS)})
        elif r < 0.765 and self.moved_balances < 50:  # a balance document moves to a new user (rare)
            i = rnd.randrange(len(self.USERS))
            self.moved_balances += 1
            self.standin.update(DB, ECONOMY, f"e{i}", set={"masterAccountId": f"moved{self.moved_balances}"})
        elif r < 0.93:
            i = rnd.randrange(len(self.USERS))
            self.standin.update(DB, ECONOMY, f"e{i}", inc={"usdCredit": Decimal128(f"{rnd.randint(-500, 900)}e-6"),
                                                          "exp": rnd.randint(0, 3)})
        else:
            i = rnd.randrange(len(self.USERS))
            self.standin.update(DB, ECONOMY, f"e{i}", set={"usdCredit": Decimal128(f"{rnd.randint(0, 99999)}e-4")})
        self.count += 1

    def run(self) -> None:
        while not self.stop.is_set() and self.count < self.limit:
            self.one()
            time.sleep(self.pause_s)
        self.stop.set()


@dataclass
class Diff:
    lost: list[tuple[str, str]] = field(default_factory=list)  # live in the documents, absent in Redis
    phantom: list[tuple[str, str]] = field(default_factory=list)  # in Redis, not live in the documents
    wrong: list[tuple[str, str, object, object]] = field(default_factory=list)  # different status/progress
    balances: list[tuple[str, object, object]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.phantom or self.wrong or self.balances)

    def __str__(self) -> str:
        return (f"lost={len(self.lost)} phantom={len(self.phantom)} wrong={len(self.wrong)} "
                f"balances={len(self.balances)}\n lost: {self.lost[:20]}\n phantom: {self.phantom[:20]}\n"
                f" wrong: {self.wrong[:20]}\n balances: {self.balances[:20]}")


class _UsableIds:
    """The stand-in's documents minus those whose ``_id`` the worker rejects (``expected_state``
    checks a task's _id through ``normalize_task``, but a balance's _id nowhere)."""

    def __init__(self, standin) -> None:
        self.standin = standin

    def documents(self, db: str, coll: str) -> list[dict]:
        return [doc for doc in self.standin.documents(db, coll) if document_id(doc.get("_id")) is not None]


def compare(standin, redis, layout) -> Diff:
    """Read model vs the projection of the stand-in's documents, task by task."""
    expected = without_empty(expected_state(_UsableIds(standin)))
    actual = actual_state(redis, layout)
    diff = Diff()
    want = {(u, g): v for u, e in expected.items() for g, v in e["tasks"].items()}
    have = {(u, g): v for u, e in actual.items() for g, v in e["tasks"].items()}
    diff.lost = sorted(set(want) - set(have))
    diff.phantom = sorted(set(have) - set(want))
    diff.wrong = [(u, g, want[u, g], have[u, g]) for u, g in sorted(set(want) & set(have)) if want[u, g] != have[u, g]]
    zero = ("0", 0, 0)
    for uid in sorted(set(expected) | set(actual)):
        a = expected.get(uid, {}).get("balance", zero)
        b = actual.get(uid, {}).get("balance", zero)
        if a != b:
            diff.balances.append((uid, a, b))
    return diff


def resync_seconds(log_text: str) -> list[float]:
    """Durations of every finished resync in a projector log."""
    return [float(s) for s in re.findall(r"resync done: .*?, ([0-9.]+) s", log_text)]
