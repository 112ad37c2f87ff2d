"""Synthetic change-stream traffic shaped like what pymongo yields for the platform's collections.

A deterministic stream (seeded) of ``generationOutputs`` inserts and updates that walk each task
through pending -> processing (with reported progress) -> completed/failed, a few deletes, and a
``userEconomy`` update when a task is charged. Many tasks are in flight at once, so a batch of a
thousand events rarely holds two changes to the same document (coalescing would flatter us).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
from bson import Decimal128, Int64, ObjectId, Timestamp

DB = "app"
TASKS = "generationOutputs"
ECONOMY = "userEconomy"
KINDS = {TASKS: "tasks", ECONOMY: "economy"}

TOOLS = [
    ("flux-dev", "Flux Dev", "comfyui"),
    ("sdxl-turbo", "SDXL Turbo", "comfyui"),
    ("chatgpt-4o", "ChatGPT", "openai"),
    ("kling-video", "Kling Video", "kling"),
    ("upscale-4x", "Upscale 4x", "comfyui"),
]
PLATFORMS = ["telegram", "discord", "web"]
PROMPT = ("a lighthouse on a cliff at dusk, volumetric light, waves crashing, cinematic, 35mm, "
          "highly detailed, trending on artstation")


@dataclass
class _Task:
    gid: ObjectId
    owner: str
    tool: tuple[str, str, str]
    platform: str
    started: datetime
    steps: int
    step: int = 0
    status: str = "pending"


@dataclass
class Stream:
    """Yields change events; ``users`` owners, about ``in_flight`` tasks running at once."""

    users: int
    in_flight: int
    seed: int = 7
    # Tasks start at this moment (now by default: the projector hides tasks idle for a day).
    epoch: datetime = field(default_factory=lambda: datetime.now(UTC))
    user_ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.user_ids = [f"x402:0x{rng.getrandbits(64):016x}" for _ in range(self.users)]
        self._economy_ids = {uid: ObjectId() for uid in self.user_ids}
        self._credit = {uid: rng.randint(1_000_000, 50_000_000) for uid in self.user_ids}  # micro-USD
        self._exp = {uid: rng.randint(0, 5000) for uid in self.user_ids}

    def events(self, count: int, start_seconds: int = 1_795_000_000) -> Iterator[dict[str, Any]]:
        """``count`` events with strictly increasing cluster times."""
        rng = random.Random(self.seed + 1)
        live: list[_Task] = []
        done: list[_Task] = []
        charge: str | None = None  # the owner of a task that just finished: their balance moves next
        now = self.epoch
        for i in range(count):
            now += timedelta(microseconds=rng.randint(50, 400))
            cluster = Timestamp(start_seconds + i // 1000, i % 1000 + 1)
            roll = rng.random()
            if charge is not None:
                yield self._economy(charge, cluster, now, rng)
                charge = None
            elif roll < 0.03 or not (live or len(live) < self.in_flight):
                yield self._economy(rng.choice(self.user_ids), cluster, now, rng)  # a top-up
            elif done and roll > 0.995:
                yield self._delete(done.pop(rng.randrange(len(done))), cluster, now)
            elif len(live) < self.in_flight and (roll < 0.25 or len(live) < self.in_flight // 2):
                task = _Task(ObjectId(), rng.choice(self.user_ids), rng.choice(TOOLS), rng.choice(PLATFORMS),
                             now, steps=rng.randint(2, 5))
                live.append(task)
                yield self._task_event("insert", task, cluster, now)
            else:
                index = rng.randrange(len(live))
                task = live[index]
                if task.status == "pending":
                    task.status = "processing"
                elif task.step < task.steps:
                    task.step += 1
                else:
                    task.status = "failed" if rng.random() < 0.05 else "completed"
                    live[index] = live[-1]
                    live.pop()
                    done.append(task)
                    if len(done) > 5000:
                        done.pop(0)
                    if task.status == "completed":
                        charge = task.owner
                yield self._task_event("update", task, cluster, now)

    # ------------------------------------------------------------------------ documents

    def task_document(self, task: _Task, now: datetime) -> dict[str, Any]:
        tool_id, display, service = task.tool
        finished = task.status in ("completed", "failed")
        doc: dict[str, Any] = {
            "_id": task.gid,
            "masterAccountId": task.owner,
            "sessionId": ObjectId(),
            "initiatingEventId": ObjectId(),
            "serviceName": service,
            "toolId": tool_id,
            "toolDisplayName": display,
            "status": task.status,
            "requestTimestamp": task.started.replace(tzinfo=None),
            "updatedAt": now.replace(tzinfo=None),
            "notificationPlatform": task.platform,
            "deliveryStatus": "sent" if finished else "pending",
            "requestPayload": {"prompt": PROMPT, "width": 1024, "height": 1024, "steps": 28,
                               "seed": Int64(task.gid.generation_time.microsecond * 7919)},
            "metadata": {"toolDisplayName": display, "run_id": str(task.gid), "platformContext": {
                "chatId": Int64(-1001234567890), "messageId": 4711}},
        }
        if task.status == "processing":
            doc["progress"] = round(task.step / task.steps, 3)
            doc["metadata"]["currentStep"] = task.step
            doc["metadata"]["totalSteps"] = task.steps
        if finished:
            doc["responseTimestamp"] = now.replace(tzinfo=None)
            doc["costUsd"] = Decimal128(f"0.{task.steps:02d}2469")
            doc["responsePayload"] = [{"type": "image", "url": f"https://cdn.example/{task.gid}.png"}]
        return doc

    def _base(self, op: str, coll: str, doc_id: ObjectId, cluster: Timestamp, now: datetime) -> dict[str, Any]:
        return {
            "_id": {"_data": f"82{cluster.time:08X}{cluster.inc:08X}2B042C0100296E5A1004{doc_id}46645F69640064"},
            "operationType": op,
            "clusterTime": cluster,
            "wallTime": now.replace(tzinfo=None),
            "ns": {"db": DB, "coll": coll},
            "documentKey": {"_id": doc_id},
        }

    def _task_event(self, op: str, task: _Task, cluster: Timestamp, now: datetime) -> dict[str, Any]:
        event = self._base(op, TASKS, task.gid, cluster, now)
        doc = self.task_document(task, now)
        if op == "update":
            changed = {"status": task.status, "updatedAt": doc["updatedAt"]}
            if "progress" in doc:
                changed["progress"] = doc["progress"]
            event["updateDescription"] = {"updatedFields": changed, "removedFields": [], "truncatedArrays": []}
        event["fullDocument"] = doc
        return event

    def _delete(self, task: _Task, cluster: Timestamp, now: datetime) -> dict[str, Any]:
        return self._base("delete", TASKS, task.gid, cluster, now)

    def _economy(self, uid: str, cluster: Timestamp, now: datetime, rng: random.Random) -> dict[str, Any]:
        self._credit[uid] = max(0, self._credit[uid] - rng.randint(100, 50_000))
        self._exp[uid] += rng.randint(1, 20)
        doc_id = self._economy_ids[uid]
        event = self._base("update", ECONOMY, doc_id, cluster, now)
        credit = Decimal128(f"{self._credit[uid] // 1_000_000}.{self._credit[uid] % 1_000_000:06d}")
        event["updateDescription"] = {"updatedFields": {"usdCredit": credit, "exp": Int64(self._exp[uid])},
                                      "removedFields": [], "truncatedArrays": []}
        event["fullDocument"] = {
            "_id": doc_id,
            "masterAccountId": uid,
            "usdCredit": credit,
            "exp": Int64(self._exp[uid]),
            "createdAt": self.epoch.replace(tzinfo=None),
            "updatedAt": now.replace(tzinfo=None),
        }
        return event


def encoded(events: Iterator[dict[str, Any]]) -> list[bytes]:
    """The events as the raw BSON a change-stream cursor hands pymongo."""
    return [bson.encode(event) for event in events]
