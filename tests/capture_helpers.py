"""Shared pieces of the capture tests: a stand-in, workers on it, and the expected projection."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from projector.normalize import Balance, Rules, Task, normalize_balance, normalize_task
from readmodel import Layout, ReadModel, View, read_snapshot

DB = "app"
TASKS = "generationOutputs"
ECONOMY = "userEconomy"


def iso_ago(seconds: float = 0.0) -> str:
    """ISO-8601 UTC of ``seconds`` before now: fixture times follow the clock, whatever the date."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - seconds))


def task_doc(gid: str, owner: str = "u1", status: str = "processing", **fields: Any) -> dict:
    """A task document that started now (a fixed date would go stale after STALE_AFTER_HOURS)."""
    doc = {"_id": gid, "masterAccountId": owner, "status": status, "toolId": "flux",
           "requestTimestamp": iso_ago(0)}
    doc.update(fields)
    return doc


def economy_doc(doc_id: str, owner: str, credit: str = "1.5", exp: int = 3) -> dict:
    return {"_id": doc_id, "masterAccountId": owner, "usdCredit": credit, "exp": exp}


def drive(worker: Any, until: Callable[[], bool], timeout: float = 15.0, what: str = "the condition") -> None:
    """Step the worker until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.step()
        if until():
            return
    raise AssertionError(f"{what} did not happen within {timeout} s (state {worker.stats.state})")


def settle(worker: Any, timeout: float = 15.0) -> None:
    """Step until the worker has applied everything written so far."""
    drive(worker, lambda: worker.stats.state == "tailing" and worker.caught_up, timeout, "catching up")


def snapshot(redis: Any, layout: Layout, uid: str) -> dict:
    """The whole snapshot now (every live task: the cap on what the API lists is not tested here)."""
    return read_snapshot(redis, layout, uid, View(int(time.time() * 1000), live_tasks_shown=sys.maxsize))


def expected_state(standin: Any, rules: Rules = Rules()) -> dict[str, dict]:
    """The projection of the stand-in's current documents: user -> {tasks, balance}."""
    state: dict[str, dict] = {}
    for doc in standin.documents(DB, TASKS):
        task = normalize_task(doc, rules)
        if isinstance(task, Task) and task.live:
            entry = state.setdefault(task.owner, {"tasks": {}, "balance": ("0", 0, 0)})
            entry["tasks"][task.visible["generationId"]] = (task.visible["status"], task.visible["progressPercent"])
    for doc in standin.documents(DB, ECONOMY):
        balance = normalize_balance(doc, rules)
        if isinstance(balance, Balance):
            entry = state.setdefault(balance.owner, {"tasks": {}, "balance": ("0", 0, 0)})
            entry["balance"] = (balance.usd_credit, balance.points, balance.exp)
    return state


def actual_state(redis: Any, layout: Layout) -> dict[str, dict]:
    """The read model in the same shape; users with nothing to show are left out."""
    state: dict[str, dict] = {}
    for uid in ReadModel(redis, layout).known_users():
        snap = snapshot(redis, layout, uid)
        # An estimate is derived when the snapshot is read (elapsed over a learned duration): the
        # stored truth for such a task is "no progress of its own".
        tasks = {t["generationId"]: (t["status"], None if t["progressSource"] == "estimate" else t["progressPercent"])
                 for t in snap["liveTasks"]}
        balance = snap["balance"]
        entry = {"tasks": tasks, "balance": (balance["usdCredit"], balance["points"], balance["exp"])}
        if tasks or entry["balance"] != ("0", 0, 0):
            state[uid] = entry
    return state


def without_empty(state: dict[str, dict]) -> dict[str, dict]:
    return {uid: entry for uid, entry in state.items() if entry["tasks"] or entry["balance"] != ("0", 0, 0)}
