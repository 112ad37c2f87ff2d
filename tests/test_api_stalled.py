"""Stalled tasks: flagged when a live task's status and progress have not moved for STALLED_FACTOR
typical durations of its tool (STALLED_AFTER_S when unknown), in the snapshot, the chat text and
the panel, and unflagged once it moves; a change that only touches the document (a heartbeat
bumping updatedAt) does not count. A pure rule with the clock as a parameter, the apply script's
progress-moved time, then the real processes."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from api.auth import mint_token
from api.render import STALLED_MARK
from api.stalled import StallRule, flag_stalled
from projector.normalize import Rules
from projector.projection import TASKS as TASK_DOCS
from projector.projection import document_change
from readmodel import Layout, ReadModel, View, position, read_snapshot

from .apiserver import SECRET, Server, apply, auth, iso_ms, task_change
from .capture_helpers import DB, TASKS, iso_ago, settle, task_doc
from .test_api_panel import browser, wait_for  # noqa: F401 (a fixture)

T0 = 1_800_000_000_000  # any moment: the rule only compares times it is given


def task(updated: int | None = T0, started: int | None = T0 - 5_000, expected: int | None = None) -> dict:
    return {"generationId": "g", "updatedAt": None if updated is None else iso_ms(updated),
            "startedAt": None if started is None else iso_ms(started), "expectedDurationMs": expected}


@pytest.mark.parametrize(("case", "now", "stalled"), [
    (task(), T0 + 600_000 - 1, False),                  # unknown duration: the fixed time
    (task(), T0 + 600_000, True),
    (task(expected=20_000), T0 + 59_999, False),        # known: three typical durations
    (task(expected=20_000), T0 + 60_000, True),
    (task(updated=None), T0 - 5_000 + 600_000, True),   # never updated: from its start
    (task(updated=None, started=None), T0 + 10**9, False),  # no time at all: never flagged
])
def test_the_rule_flags_a_task_once_it_has_not_moved_for_its_window(case, now, stalled):
    snapshot = flag_stalled({"liveTasks": [case]}, StallRule(factor=3, fixed_ms=600_000), now)
    assert snapshot["liveTasks"][0]["stalled"] is stalled
    assert (snapshot["liveTasks"][0]["stalledAt"] is None) == (case["updatedAt"] is None and case["startedAt"] is None)


def test_the_window_runs_from_the_last_move_of_progress_not_from_the_last_update():
    heartbeat = {**task(updated=T0 + 500_000), "progressMovedAt": iso_ms(T0)}
    snapshot = flag_stalled({"liveTasks": [heartbeat]}, StallRule(factor=3, fixed_ms=600_000), T0 + 600_000)
    assert snapshot["liveTasks"][0]["stalled"] is True
    assert snapshot["liveTasks"][0]["stalledAt"] == iso_ms(T0 + 600_000)


def test_a_move_unflags_and_restarts_the_window():
    rule = StallRule(factor=2, fixed_ms=1000)
    old = flag_stalled({"liveTasks": [task(updated=T0, expected=500)]}, rule, T0 + 1_500)
    moved = flag_stalled({"liveTasks": [task(updated=T0 + 1_400, expected=500)]}, rule, T0 + 1_500)
    assert old["liveTasks"][0]["stalled"] and not moved["liveTasks"][0]["stalled"]
    assert moved["liveTasks"][0]["stalledAt"] == iso_ms(T0 + 2_400)


def doc_put(n: int, status: str = "processing", progress: float = 0.2, updated_ms: int = T0, **fields):
    doc = {"_id": "g", "masterAccountId": "u1", "status": status, "toolId": "flux", "progress": progress,
           "requestTimestamp": iso_ms(T0 - 5_000), "updatedAt": iso_ms(updated_ms), **fields}
    return document_change(TASK_DOCS, doc, "g", position(1_800_000_000 + n, 0), T0, Rules(stale_after_ms=10**12))


def stored(real_redis, layout) -> dict:
    [live] = read_snapshot(real_redis, layout, "u1", View(T0))["liveTasks"]
    return live


def test_the_apply_script_keeps_the_progress_moved_time_while_status_and_progress_stay(real_redis, layout):
    model = ReadModel(real_redis, layout)
    model.apply([doc_put(1)], "x")
    assert stored(real_redis, layout)["progressMovedAt"] == iso_ms(T0)
    model.apply([doc_put(2, updated_ms=T0 + 60_000, heartbeat=1)], "x")  # touched, progress unchanged
    model.apply([doc_put(3, updated_ms=T0 + 90_000, costUsd="0.5")], "x")  # another field, progress unchanged
    assert (stored(real_redis, layout)["updatedAt"], stored(real_redis, layout)["progressMovedAt"]) == (
        iso_ms(T0 + 90_000), iso_ms(T0))
    model.apply([doc_put(4, progress=0.3, updated_ms=T0 + 120_000)], "x")  # progress moves
    assert stored(real_redis, layout)["progressMovedAt"] == iso_ms(T0 + 120_000)
    model.apply([doc_put(5, status="running", progress=0.3, updated_ms=T0 + 150_000)], "x")  # status moves
    assert stored(real_redis, layout)["progressMovedAt"] == iso_ms(T0 + 150_000)
    model.apply([doc_put(5, status="running", progress=0.3, updated_ms=T0 + 150_000)], "x")  # a replay
    model.apply([doc_put(6, status="running", progress=0.3, updated_ms=T0 + 400_000)], "x")
    assert stored(real_redis, layout)["progressMovedAt"] == iso_ms(T0 + 150_000)


def test_through_the_projector_a_task_touched_without_progress_stalls_and_a_moving_one_does_not(
        standin, make_worker, real_redis, layout):
    """Dates relative to now: both tasks last moved a minute ago; then one only gets a heartbeat
    (its updatedAt now, its progress the same) and the other moves its progress."""
    for gid in ("beating", "moving"):
        standin.insert(DB, TASKS, task_doc(gid, "u1", progress=0.5, requestTimestamp=iso_ago(120),
                                           updatedAt=iso_ago(60)))
    worker = make_worker()
    settle(worker)
    standin.update(DB, TASKS, "beating", set={"updatedAt": iso_ago(0), "status": "processing"})
    standin.update(DB, TASKS, "moving", set={"updatedAt": iso_ago(0), "progress": 0.6})
    settle(worker)
    now_ms = int(time.time() * 1000)
    snap = flag_stalled(read_snapshot(real_redis, layout, "u1", View(now_ms)), StallRule(fixed_ms=30_000), now_ms)
    tasks = {t["generationId"]: t for t in snap["liveTasks"]}
    assert tasks["beating"]["updatedAt"] > tasks["beating"]["progressMovedAt"]  # the heartbeat was applied
    assert {gid: t["stalled"] for gid, t in tasks.items()} == {"beating": True, "moving": False}


@pytest.fixture
def server(prefix, store_env):
    server = Server(prefix, env={**store_env, "STALLED_AFTER_S": "30", "STALLED_FACTOR": "3"}).start()
    yield server
    server.stop()


def test_the_snapshot_and_the_chat_text_flag_a_stalled_task_until_it_moves(server, real_redis, layout):
    model = ReadModel(real_redis, layout)
    now = int(time.time() * 1000)
    apply(model,
          task_change("s1", "quiet", started_ms=now - 120_000, updated_ms=now - 60_000),  # 60 s > 30 s
          task_change("s1", "slow-tool", started_ms=now - 20_000, updated_ms=now - 10_000, expected_ms=2_000),  # > 3 × 2 s
          task_change("s1", "busy", started_ms=now - 120_000, updated_ms=now - 1_000))
    snap = httpx.get(f"{server.url}/users/s1/status", headers=auth(), timeout=10).json()
    assert {t["generationId"]: t["stalled"] for t in snap["liveTasks"]} == {"quiet": True, "slow-tool": True, "busy": False}
    text = httpx.get(f"{server.url}/users/s1/status/text", params={"platform": "telegram"}, headers=auth(), timeout=10)
    assert text.json()["text"].count(STALLED_MARK) == 2
    apply(model, task_change("s1", "quiet", started_ms=now - 120_000, updated_ms=int(time.time() * 1000), progress=60.0))
    snap = httpx.get(f"{server.url}/users/s1/status", headers=auth(), timeout=10).json()
    assert {t["generationId"]: t["stalled"] for t in snap["liveTasks"]} == {"quiet": False, "slow-tool": True, "busy": False}
    discord = httpx.get(f"{server.url}/users/s1/status/text", params={"platform": "discord"}, headers=auth(), timeout=10)
    assert discord.json()["text"].count(STALLED_MARK) == 1


@pytest.mark.browser
def test_the_panel_flags_a_task_when_it_stalls_between_snapshots_and_unflags_it_when_it_moves(
        browser, prefix, real_redis):
    model = ReadModel(real_redis, Layout(prefix))
    user = f"s2-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    apply(model, task_change(user, "g", started_ms=now - 10_000, updated_ms=now))
    server = Server(prefix, env={"STALLED_AFTER_S": "3"}).start()
    try:
        browser.get(f"{server.url}/panel#user={user}&token={mint_token(SECRET, user, 600)}")
        wait_for(browser, "document.querySelectorAll('li.task').length === 1")
        # No new snapshot comes: the panel flags it by itself once stalledAt passes.
        wait_for(browser, "document.querySelector(\"li[data-id='g']\").classList.contains('stalled')", timeout_s=15)
        assert "stalled" in browser.find_element("css selector", "li[data-id='g'] .status").text
        apply(model, task_change(user, "g", started_ms=now - 10_000, updated_ms=int(time.time() * 1000), progress=80.0))
        wait_for(browser, "!document.querySelector(\"li[data-id='g']\").classList.contains('stalled')")
    finally:
        server.stop()
