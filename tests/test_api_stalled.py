"""Stalled tasks: flagged when a live task has not moved for STALLED_FACTOR typical durations of
its tool (STALLED_AFTER_S when unknown), in the snapshot, the chat text and the panel, and
unflagged once it moves; a pure rule with the clock as a parameter, then the real processes."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from api.auth import mint_token
from api.render import STALLED_MARK
from api.stalled import StallRule, flag_stalled
from readmodel import Layout, ReadModel

from .apiserver import SECRET, Server, apply, auth, iso_ms, task_change
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


def test_a_move_unflags_and_restarts_the_window():
    rule = StallRule(factor=2, fixed_ms=1000)
    old = flag_stalled({"liveTasks": [task(updated=T0, expected=500)]}, rule, T0 + 1_500)
    moved = flag_stalled({"liveTasks": [task(updated=T0 + 1_400, expected=500)]}, rule, T0 + 1_500)
    assert old["liveTasks"][0]["stalled"] and not moved["liveTasks"][0]["stalled"]
    assert moved["liveTasks"][0]["stalledAt"] == iso_ms(T0 + 2_400)


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
