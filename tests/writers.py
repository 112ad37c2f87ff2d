"""Writers of document traffic on the stand-in while projector processes run: :class:`Writer`
(a steady mix) and :class:`MixedWriter` (every shape the reliability suite wants)."""

from __future__ import annotations

import random
import threading
import time
from typing import ClassVar

from bson import Decimal128, Int64

from .capture_helpers import DB, ECONOMY, TASKS, economy_doc, iso_ago, task_doc


class Writer(threading.Thread):
    """Mixed writes at a steady pace: inserts, progress, completions, deletes, owner moves, balances."""

    USERS: ClassVar[list[str]] = [f"u{i}" for i in range(6)]

    def __init__(self, standin, seed: int) -> None:
        super().__init__(daemon=True)
        self.standin = standin
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.live: list[str] = []
        self.count = 0

    def seed(self) -> None:
        for i, uid in enumerate(self.USERS):
            self.standin.insert(DB, ECONOMY, economy_doc(f"e{i}", uid, credit="1.00", exp=0))
        for n in range(40):
            self.insert(f"s{n}")

    def insert(self, gid: str) -> None:
        status = self.random.choice(["pending", "processing", "running", "queued"])
        self.standin.insert(DB, TASKS, task_doc(gid, self.random.choice(self.USERS), status=status))
        self.live.append(gid)

    def one(self) -> None:
        r, n = self.random.random(), self.count
        if r < 0.25 or not self.live:
            self.insert(f"w{n}")
        elif r < 0.55:
            self.standin.update(DB, TASKS, self.random.choice(self.live), set={"progress": round(self.random.random(), 2)})
        elif r < 0.65:
            gid = self.live.pop(self.random.randrange(len(self.live)))
            self.standin.update(DB, TASKS, gid, set={"status": self.random.choice(["completed", "failed"])})
        elif r < 0.75:
            self.standin.delete(DB, TASKS, self.live.pop(self.random.randrange(len(self.live))))
        elif r < 0.82:
            gid = self.random.choice(self.live)
            self.standin.replace(DB, TASKS, gid, task_doc(gid, self.random.choice(self.USERS), progress=0.5))
        else:
            i = self.random.randrange(len(self.USERS))
            self.standin.update(DB, ECONOMY, f"e{i}", set={"usdCredit": f"{self.random.randint(0, 9999) / 100:.2f}",
                                                             "exp": self.random.randint(0, 500)})
        self.count += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.one()
            time.sleep(0.002)


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
