"""The soak's writer: steady mixed writes into MongoDB (the stand-in) at a fixed rate.

The data set is bounded on purpose (a few balance documents and task slots per user, reused), so
in a steady state nothing the read model keeps may keep growing: any growth is a leak. The mix:
the user's balance ``exp`` set to the next mark (the writes whose delivery is timed), ``$inc`` of
``usdCredit``, task inserts into free slots, progress updates, terminal statuses, deletes, and a
rare poison document (dead-lettered; the dead-letter stream's cap bounds it).

Owned by the writer thread: ``stamps``, ``last_mark``, ``slots``, the counters. The soak's main
thread reads ``stamps``/``history`` only through :meth:`Writer.take` (under the lock).
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime

from bson import Decimal128

DB, TASKS, ECONOMY = "app", "generationOutputs", "userEconomy"
SLOTS = 4  # task slots per user
LIVE = ["pending", "processing", "running", "queued"]
TERMINAL = ["completed", "failed", "cancelled by user", "timeout"]


def now() -> datetime:
    return datetime.now(UTC)


class Writer(threading.Thread):
    def __init__(self, mongo, users: list[str], rate: float, seed: int = 1) -> None:
        super().__init__(name="soak-writer", daemon=True)
        self.db = mongo[DB]
        self.users = users
        self.rate = rate
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.stamps: dict[tuple[str, int], int] = {}  # (user, mark) -> monotonic ns just before the write
        self.history: dict[str, list[tuple[int, int]]] = {}  # user -> [(ns, mark)] since the last take
        self.last_mark: dict[str, int] = dict.fromkeys(users, 0)
        self.slots: dict[tuple[str, int], str] = {}  # (user, slot) -> "live" | "terminal" (absent: free)
        self.writes = 0
        self.errors: dict[str, int] = {}

    def seed(self) -> None:
        self.db[ECONOMY].insert_many([{"_id": f"econ-{uid}", "masterAccountId": uid, "usdCredit": Decimal128("5"),
                                       "exp": 0} for uid in self.users])

    def run(self) -> None:
        interval, next_at = 1.0 / self.rate, time.monotonic()
        while not self.stop.is_set():
            try:
                self.one()
            except Exception as exc:  # counted; the soak reports it (MongoDB is not the subject)
                key = type(exc).__name__
                self.errors[key] = self.errors.get(key, 0) + 1
            self.writes += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            elif delay < -1:
                next_at = time.monotonic()  # fell behind (a loaded machine): no burst to catch up

    def one(self) -> None:
        r, rng = self.rng.random(), self.rng
        uid = rng.choice(self.users)
        slot = rng.randrange(SLOTS)
        gid, state = f"t-{uid}-{slot}", self.slots.get((uid, slot))
        if r < 0.35:
            self.mark(uid)
        elif r < 0.45:
            self.db[ECONOMY].update_one({"_id": f"econ-{uid}"},
                                        {"$inc": {"usdCredit": Decimal128(f"{rng.randint(-500, 900)}e-6")}})
        elif r < 0.999 and state is None:
            self.db[TASKS].insert_one({"_id": gid, "masterAccountId": uid, "status": rng.choice(LIVE), "toolId": "flux",
                                       "requestTimestamp": now(), "updatedAt": now()})
            self.slots[uid, slot] = "live"
        elif r < 0.75 and state == "live":
            self.db[TASKS].update_one({"_id": gid}, {"$set": {"progressPercent": rng.randint(0, 100), "updatedAt": now(),
                                                              "status": "processing"}})
        elif r < 0.87 and state == "live":
            self.db[TASKS].update_one({"_id": gid}, {"$set": {"status": rng.choice(TERMINAL), "responseTimestamp": now()}})
            self.slots[uid, slot] = "terminal"
        elif r < 0.999 and state is not None:
            self.db[TASKS].delete_one({"_id": gid})
            del self.slots[uid, slot]
        else:  # a poison balance (out of range): dead-lettered, never applied
            self.db[ECONOMY].replace_one({"_id": f"poison-{rng.randrange(20)}"},
                                         {"masterAccountId": "poison", "usdCredit": "1e999999999"}, upsert=True)

    def mark(self, uid: str) -> None:
        mark = self.last_mark[uid] + 1
        stamp = time.monotonic_ns()
        self.db[ECONOMY].update_one({"_id": f"econ-{uid}"}, {"$set": {"exp": mark}})
        with self.lock:
            self.last_mark[uid] = mark
            self.stamps[uid, mark] = stamp
            self.history.setdefault(uid, []).append((stamp, mark))

    def last_before(self, cutoff_ns: int) -> dict[str, int]:
        """Each user's newest mark written before ``cutoff_ns`` (the ones a client must have seen by now)."""
        with self.lock:
            out = {}
            for uid, marks in self.history.items():
                before = [m for ns, m in marks if ns < cutoff_ns]
                if before:
                    out[uid] = before[-1]
            return out

    def stamp_of(self, uid: str, mark: int) -> int | None:
        with self.lock:
            return self.stamps.get((uid, mark))

    def forget_before(self, cutoff_ns: int) -> None:
        """Drop what no later check needs (stamps older than ``cutoff_ns``, keeping each user's last)."""
        with self.lock:
            self.stamps = {k: ns for k, ns in self.stamps.items() if ns >= cutoff_ns or k[1] == self.last_mark[k[0]]}
            for uid, marks in self.history.items():
                keep = [(ns, m) for ns, m in marks if ns >= cutoff_ns]
                self.history[uid] = keep or marks[-1:]
