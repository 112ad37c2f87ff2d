"""The delivery benchmark's writes and their matching: each write puts a number used once (a
*mark*) in a user's ``usdCredit``, stamped with CLOCK_MONOTONIC right before it is sent, and the
first SSE event carrying the mark is that write delivered (bench/delivery.py runs the phases)."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from .common import percentile, progress

if TYPE_CHECKING:
    from .delivery import Sizes

TICK_S = 0.005  # the steady phase sends one bulk write per tick


def isolated(economy, users: list[str], sizes: Sizes, marks: Marks, phase: str = "isolated") -> None:
    rng = random.Random(7)
    bar = progress(total=sizes.isolated, desc=f"{phase} writes", unit="write")
    for _ in range(sizes.isolated):
        uid = rng.choice(users)
        mark = marks.next(phase)
        stamp = time.monotonic_ns()
        economy.update_one({"_id": f"econ-{uid}"}, {"$set": {"usdCredit": mark}})
        marks.stamp(mark, uid, stamp)
        bar.update()
        time.sleep(rng.uniform(*sizes.gap_s))
    bar.close()


def steady(economy, users: list[str], sizes: Sizes, marks: Marks) -> dict:
    """Writes at ``sizes.rate`` for ``sizes.duration_s``, one bulk write per tick."""
    from pymongo import UpdateOne

    rng = random.Random(11)
    total = int(sizes.rate * sizes.duration_s)
    bar = progress(total=total, desc=f"writes at {sizes.rate}/s", unit="write")
    sent = 0
    write_ms: list[float] = []
    start = time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - start) * sizes.rate) + 1)
        if due > sent:
            batch = [(rng.choice(users), marks.next("load")) for _ in range(due - sent)]
            stamp = time.monotonic_ns()
            economy.bulk_write([UpdateOne({"_id": f"econ-{uid}"}, {"$set": {"usdCredit": mark}}) for uid, mark in batch])
            write_ms.append((time.monotonic_ns() - stamp) / 1e6)
            for uid, mark in batch:
                marks.stamp(mark, uid, stamp)
            bar.update(due - sent)
            sent = due
        pause = start + sent / sizes.rate + TICK_S - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    elapsed = time.monotonic() - start
    bar.close()
    write_ms.sort()
    return {"achieved_rate": round(total / elapsed), "bulk_writes": len(write_ms),
            "bulk_write_p50_ms": round(percentile(write_ms, 50), 2), "bulk_write_p99_ms": round(percentile(write_ms, 99), 2)}


class Marks:
    """The value each write puts in usdCredit (used once), and when and for whom it was written."""

    def __init__(self) -> None:
        self._n = 0
        self.phase: dict[str, str] = {}
        self.written: dict[str, tuple[str, int]] = {}

    def next(self, phase: str) -> str:
        self._n += 1
        mark = str(1000 + self._n)
        self.phase[mark] = phase
        return mark

    def stamp(self, mark: str, uid: str, ns: int) -> None:
        self.written[mark] = (uid, ns)


def latencies(marks: Marks, sse: list, pubsub: list, phase: str) -> tuple[list[float], list[float], int]:
    """(write -> SSE ms, write -> SPUBLISH ms, writes never delivered) for one phase's writes."""
    first_sse: dict[str, tuple[str, int, int]] = {}
    for uid, version, at, mark in sse:
        if mark is not None and mark not in first_sse:
            first_sse[mark] = (uid, version, at)
    first_pub: dict[tuple[str, int], int] = {}
    for uid, version, at in pubsub:
        first_pub.setdefault((uid, version), at)
    to_sse, to_pub, missing = [], [], 0
    for mark, (_uid, stamp) in marks.written.items():
        if marks.phase[mark] != phase:
            continue
        seen = first_sse.get(mark)
        if seen is None:
            missing += 1  # superseded by a newer write before it was delivered
            continue
        to_sse.append((seen[2] - stamp) / 1e6)
        published = first_pub.get((seen[0], seen[1]))
        if published is not None:
            to_pub.append((published - stamp) / 1e6)
    return sorted(to_sse), sorted(to_pub), missing
