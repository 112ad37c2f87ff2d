"""Realistic traffic for the demo: task lifecycles and balance changes, written through pymongo.

Each task goes pending -> processing (with progress in one of the shapes real producers use, or
none at all) -> completed / failed / payment_failed, and a completed task charges its cost to the
user's balance and adds experience, as the platform does.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from bson import Decimal128, Int64, ObjectId
from pymongo import MongoClient

TOOLS = [
    ("flux-dev", "FLUX.1 dev", 6.0),
    ("sdxl", "Stable Diffusion XL", 4.0),
    ("video-gen", "Video generation", 14.0),
    ("upscale", "Upscaler 4x", 3.0),
]
PLATFORMS = ["telegram", "discord", "web"]
# How producers report progress, each as a function of the fraction done (None: never reports).
PROGRESS_SHAPES = [
    lambda f: {"progress": round(f, 3)},
    lambda f: {"progressPercent": round(f * 100)},
    lambda f: {"metadata.progress": f"{round(f * 100)}%"},
    lambda f: {"currentStep": int(f * 30), "totalSteps": 30},
    None,
]
DEMO_USERS = ["demo-alice", "x402:0x1821aBcD", "tg_50219", "discord_8812", "web_k7"]


@dataclass
class Counters:
    tasks_started: int = 0
    tasks_finished: int = 0
    writes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


def now() -> datetime:
    return datetime.now(UTC)


class Simulator:
    """Runs task lifecycles for a few users until stopped; thread-safe counters for a summary."""

    def __init__(self, mongo_url: str, db: str, users: list[str] = DEMO_USERS, speed: float = 1.0,
                 seed: int | None = None, concurrency: int = 6) -> None:
        self.client = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
        self.tasks = self.client[db]["generationOutputs"]
        self.economy = self.client[db]["userEconomy"]
        self.users = users
        self.speed = speed
        self.random = random.Random(seed)
        self.concurrency = concurrency
        self.counters = Counters()
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def seed_balances(self) -> None:
        for index, uid in enumerate(self.users):
            self.economy.update_one(
                {"masterAccountId": uid},
                {"$set": {"usdCredit": Decimal128(f"{2 + index * 1.5:.6f}"), "exp": Int64(100 * index),
                          "updatedAt": now()}},
                upsert=True,
            )
            self.counters.add(writes=1)

    def start(self) -> None:
        self.seed_balances()
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._lane, name=f"sim-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.client.close()

    def _sleep(self, seconds: float) -> bool:
        """Sleep scaled by speed; False when stopping."""
        return not self.stopping.wait(seconds / self.speed)

    def _lane(self) -> None:
        while not self.stopping.is_set():
            try:
                self.run_task()
            except Exception:  # the stand-in going away at shutdown is expected
                if self.stopping.is_set():
                    return
                raise
            if not self._sleep(self.random.uniform(0.5, 3.0)):
                return

    def run_task(self) -> None:
        """One full lifecycle of one task."""
        rnd = self.random
        uid = rnd.choice(self.users)
        tool_id, tool_name, typical = rnd.choice(TOOLS)
        duration = max(1.0, rnd.gauss(typical, typical / 5))
        cost = Decimal(rnd.randint(800, 60000)) / Decimal(1_000_000)
        _id = ObjectId()
        platform = rnd.choice(PLATFORMS)
        self.tasks.insert_one({
            "_id": _id, "masterAccountId": uid, "status": "pending", "toolId": tool_id,
            "toolDisplayName": tool_name, "notificationPlatform": platform,
            "requestTimestamp": now(), "costUsd": Decimal128(str(cost)),
            "metadata": {"platform": platform},
        })
        self.counters.add(tasks_started=1, writes=1)
        if not self._sleep(rnd.uniform(0.3, 1.5)):
            return
        self._set(_id, {"status": "processing"})
        shape = rnd.choice(PROGRESS_SHAPES)
        steps = rnd.randint(3, 8)
        for step in range(1, steps):
            if not self._sleep(duration / steps):
                return
            if shape is not None:
                self._set(_id, shape(step / steps))
        if not self._sleep(duration / steps):
            return
        outcome = rnd.choices(["completed", "failed", "payment_failed"], weights=[85, 10, 5])[0]
        self._set(_id, {"status": outcome, "responseTimestamp": now()})
        if outcome == "completed":
            self.economy.update_one({"masterAccountId": uid},
                                    {"$inc": {"usdCredit": Decimal128(-cost), "exp": 1}})
            self.counters.add(writes=1)
        self.counters.add(tasks_finished=1)

    def _set(self, _id: ObjectId, fields: dict) -> None:
        self.tasks.update_one({"_id": _id}, {"$set": {**fields, "updatedAt": now()}})
        self.counters.add(writes=1)
