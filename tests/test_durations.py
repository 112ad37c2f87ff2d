"""Learned durations: successful completions teach each tool's typical duration."""

import json

from projector.durations import Durations, observed_duration
from projector.normalize import Rules, normalize_task
from projector.projection import TASKS, document_change, document_projection

RULES = Rules()


def done_doc(gid, tool="flux", status="completed", start="2026-11-25T09:00:00Z", end="2026-11-25T09:00:30Z"):
    return {"_id": gid, "masterAccountId": "u1", "status": status, "toolId": tool,
            "requestTimestamp": start, "responseTimestamp": end}


def done(gid, rules=RULES, **fields):
    return normalize_task(done_doc(gid, **fields), rules)


def test_completed_task_contributes_end_minus_start():
    assert observed_duration(done("g1")) == ("flux", 30_000)


def test_failed_or_live_tasks_teach_nothing():
    assert observed_duration(done("g1", status="failed")) is None
    assert observed_duration(done("g1", status="processing")) is None


def test_which_statuses_count_as_success_is_the_rules_not_a_constant():
    rules = Rules(terminal=frozenset({"delivered", "completed"}), succeeded=frozenset({"delivered"}))
    assert observed_duration(done("g1", status="delivered", rules=rules)) == ("flux", 30_000)
    assert observed_duration(done("g1", status="completed", rules=rules)) is None


def test_nonsense_durations_are_ignored():
    assert observed_duration(done("g1", end="2026-11-25T08:59:00Z")) is None  # ends before it started
    assert observed_duration(done("g1", end="2026-11-28T09:00:00Z")) is None  # more than a day


def test_the_projection_returns_what_a_finished_task_teaches_beside_its_change():
    change, learned = document_projection(TASKS, done_doc("g1"), "g1", "0000000001.0000000000", 0, RULES)
    assert (change.state, learned) == ("finished", ("flux", 30_000))
    assert document_projection(TASKS, done_doc("g2", status="failed"), "g2", "0000000001.0000000000", 0, RULES)[1] is None


def test_average_moves_toward_new_observations():
    durations = Durations()
    durations.observe("flux", 30_000)
    assert durations("flux") == 30_000
    durations.observe("flux", 60_000)
    assert durations("flux") == 36_000
    assert durations("sdxl") is None and durations(None) is None


def test_durations_persist_in_redis_for_the_next_leader(any_redis, layout):
    durations = Durations()
    Durations.save(any_redis, layout, {"flux": durations.observe("flux", 30_000)})
    assert Durations.load(any_redis, layout)("flux") == 30_000


def test_live_task_of_a_known_tool_gets_an_expected_duration():
    durations = Durations({"flux": 30_000})
    doc = {"_id": "g9", "masterAccountId": "u1", "status": "processing", "toolId": "flux",
           "requestTimestamp": "2026-11-25T09:00:00Z"}
    record = json.loads(document_change(TASKS, doc, "g9", "0000000001.0000000000", 0, RULES, durations).record)
    assert (record["expectedDurationMs"], record["progressSource"]) == (30_000, "estimate")
