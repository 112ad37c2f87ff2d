"""Hostile documents: extreme numbers, huge strings, wrong types. Each is one document's dead
letter with a reason naming the field; nothing raises, nothing stored grows without bound, and
the real `projector run` process keeps applying everyone else's changes."""

from __future__ import annotations

import json
import signal
import string

import pytest
from bson import Decimal128, Int64
from bson.datetime_ms import DatetimeMS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.waits import wait_for
from projector.deadletters import DeadLetters
from projector.normalize import Balance, Invalid, Rules, Task, normalize_balance, normalize_task
from projector.projection import ECONOMY as ECONOMY_KIND
from projector.projection import TASKS as TASKS_KIND
from projector.projection import Rejected, document_change
from projector.values import MAX_DISPLAY_NAME, MAX_PLATFORM, MAX_STATUS, MAX_TOOL_ID
from readmodel import BalanceChange, TaskChange

from .capture_helpers import DB, ECONOMY, TASKS, economy_doc, snapshot, task_doc
from .procs import caught_up, output

RULES = Rules()
RECORD_LIMIT = 2000  # bytes: the largest record any single document may produce


def balance_doc(**fields):
    return {"_id": "e1", "masterAccountId": "u1", **fields}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"usdCredit": "1e999999999"}, "usdCredit"),  # decimal.Overflow on arithmetic
        ({"usdCredit": Decimal128("1E+6144")}, "usdCredit"),
        ({"usdCredit": Decimal128("1E-6176")}, "usdCredit"),  # more places than Decimal128 holds exactly
        ({"usdCredit": Decimal128("0E-3376")}, "usdCredit"),  # zero, written with 3376 places (found by atheris)
        ({"usdCredit": "9" * 5000}, "usdCredit"),  # int() of > 4300 digits raises ValueError
        ({"usdCredit": float("nan")}, "usdCredit"),
        ({"usdCredit": float("inf")}, "usdCredit"),
        ({"usdCredit": Decimal128("NaN")}, "usdCredit"),
        ({"usdCredit": Decimal128("-Infinity")}, "usdCredit"),
        ({"usdCredit": True}, "usdCredit"),
        ({"usdCredit": {"$numberDecimal": "1"}}, "usdCredit"),
        ({"balanceUsd": "1e400"}, "balanceUsd"),
        ({"usdCredit": "1", "exp": "9" * 5000}, "exp"),
        ({"usdCredit": "1", "exp": Decimal128("1E+5000")}, "exp"),
        ({"usdCredit": "1", "exp": 2.0**60}, "exp"),
        ({"usdCredit": "1", "exp": float("-inf")}, "exp"),
        ({"usdCredit": "1", "exp": False}, "exp"),
    ],
)
def test_extreme_numbers_in_a_balance_are_rejected_naming_the_field(fields, named):
    result = normalize_balance(balance_doc(**fields), RULES)
    assert isinstance(result, Invalid)
    assert result.reason.startswith(named + " ") and len(result.reason) < 200


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"costUsd": "1e999999999"}, "costUsd"),
        ({"costUsd": Decimal128("1E+6144")}, "costUsd"),
        ({"costUsd": "9" * 5000}, "costUsd"),
        ({"costUsd": float("nan")}, "costUsd"),
    ],
)
def test_extreme_numbers_in_a_task_are_rejected_naming_the_field(fields, named):
    result = normalize_task(task_doc("g1", **fields), RULES)
    assert isinstance(result, Invalid) and result.reason.startswith(named + " ")


def test_negative_zero_is_zero_and_ordinary_amounts_keep_their_scale():
    assert normalize_balance(balance_doc(usdCredit=Decimal128("-0.00")), RULES).usd_credit == "0.00"
    assert normalize_balance(balance_doc(usdCredit=-0.0), RULES).usd_credit == "0.0"
    assert normalize_balance(balance_doc(usdCredit=Decimal128("-12.5"), exp=Int64(7)), RULES) == Balance("u1", "-12.5", -33784, 7)


def test_progress_garbage_is_skipped_not_fatal():
    for progress in (10**400, "9" * 5000, float("nan"), Decimal128("1E+6144"), {"current": 10**400, "total": 1}):
        task = normalize_task(task_doc("g1", progress=progress), RULES)
        assert isinstance(task, Task) and task.visible["progressPercent"] is None


def test_dates_out_of_range_are_treated_as_absent():
    for stamp in (DatetimeMS(2**62), DatetimeMS(-(2**62)), "9999-12-31T23:59:59-05:00", "1" * 10_000):
        task = normalize_task(task_doc("g1", requestTimestamp=stamp, updatedAt=stamp), RULES)
        assert isinstance(task, Task) and task.visible["startedAt"] is None


def test_display_strings_are_bounded():
    huge = "x" * 1_000_000
    task = normalize_task(task_doc("g1", status=huge, toolId=huge, toolDisplayName=huge, notificationPlatform=huge), RULES)
    assert isinstance(task, Task)
    lengths = [len(task.visible[name]) for name in ("status", "toolId", "toolDisplayName", "sourcePlatform")]
    assert lengths == [MAX_STATUS, MAX_TOOL_ID, MAX_DISPLAY_NAME, MAX_PLATFORM]


def test_an_unexpected_exception_while_projecting_is_that_documents_rejection(monkeypatch):
    import projector.projection as changes

    def explode(*_args, **_kwargs):
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(changes, "live_task_record", explode)
    result = document_change(TASKS_KIND, task_doc("g1"), "g1", "0000000001.0000000001", 0, RULES)
    assert isinstance(result, Rejected) and result.doc_id == "g1" and "RuntimeError: encoder bug" in result.reason


# ---------------------------------------------------------------------------- property

_extreme_numbers = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True, places=None).map(lambda d: Decimal128(str(d)) if _d128_ok(d) else 0),
    st.sampled_from(["1e999999999", "-1e-999999999", "9" * 5000, "NaN", "-0", "1E+6144", "0x10", "1_000", " 1 "]),
    st.builds(lambda e: f"1e{e}", st.integers(-10**6, 10**6)),
    st.booleans(),
)


def _d128_ok(value) -> bool:
    try:
        Decimal128(str(value))
        return True
    except Exception:
        return False


_scalars = st.one_of(
    st.none(), _extreme_numbers,
    st.text(max_size=50), st.text(alphabet=string.printable, min_size=5000, max_size=20000),
    st.datetimes(), st.builds(DatetimeMS, st.integers(-(2**62), 2**62)),
)
def _nested(inner):
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3))


_values = st.recursive(_scalars, _nested, max_leaves=8)
_task_fields = ["status", "costUsd", "toolId", "toolDisplayName", "notificationPlatform", "requestTimestamp", "updatedAt",
                "responseTimestamp", "progressPercent", "progress", "currentStep", "totalSteps", "metadata"]
_balance_fields = ["usdCredit", "balanceUsd", "exp"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
@given(kind=st.sampled_from([TASKS_KIND, ECONOMY_KIND]), fields=st.data())
def test_any_value_in_any_field_gives_a_bounded_change_or_a_rejection_never_an_exception(kind, fields):
    names = _task_fields if kind == TASKS_KIND else _balance_fields
    doc = {"_id": "d1", "masterAccountId": "u1", "status": "processing"}
    doc.update(fields.draw(st.dictionaries(st.sampled_from(names), _values, max_size=len(names))))
    change = document_change(kind, doc, "d1", "0000000001.0000000001", 0, RULES)
    if isinstance(change, Rejected):
        assert len(change.reason) < 300
    else:
        assert isinstance(change, (TaskChange, BalanceChange))
        assert len(change.record.encode()) < RECORD_LIMIT
        if change.record and kind == TASKS_KIND:
            json.loads(change.record)


# ---------------------------------------------------------------------------- the real process

POISON = [
    (ECONOMY, economy_doc("p-overflow", "u2", credit="1e999999999")),
    (ECONOMY, {"_id": "p-d128", "masterAccountId": "u2", "usdCredit": Decimal128("1E+6144")}),
    (ECONOMY, {"_id": "p-digits", "masterAccountId": "u2", "usdCredit": "1", "exp": "9" * 5000}),
    (TASKS, task_doc("p-cost", "u2", costUsd=Decimal128("NaN"))),
]


def test_poison_documents_are_dead_lettered_and_the_projector_process_keeps_going(standin, spawn, real_redis, layout):
    standin.insert(DB, TASKS, task_doc("g1", "u1"))
    proc = spawn("--mongo-url", standin.url, "--no-progress")
    wait_for(lambda: caught_up(real_redis, layout, standin), 30, "the initial sync")
    for collection, doc in POISON:
        standin.insert(DB, collection, doc)
    standin.insert(DB, TASKS, task_doc("g2", "u1"))  # a good change after the poison
    wait_for(lambda: caught_up(real_redis, layout, standin), 30, "applying past the poison")
    assert proc.poll() is None, output(proc)[-3000:]
    assert {t["generationId"] for t in snapshot(real_redis, layout, "u1")["liveTasks"]} == {"g1", "g2"}
    letters = {e["id"]: e["reason"] for e in DeadLetters(real_redis, layout).recent()}
    assert letters.keys() == {"p-overflow", "p-d128", "p-digits", "p-cost"}
    assert letters["p-overflow"].startswith("usdCredit") and letters["p-digits"].startswith("exp")
    assert letters["p-cost"].startswith("costUsd")

    # A restart resumes past the poison: no crash loop, no second dead letter, later changes apply.
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    again = spawn("--mongo-url", standin.url, "--no-progress")
    standin.insert(DB, TASKS, task_doc("g3", "u1"))
    wait_for(lambda: "g3" in {t["generationId"] for t in snapshot(real_redis, layout, "u1")["liveTasks"]}, 30,
             "a change after the restart")
    assert again.poll() is None and "Traceback" not in output(again), output(again)[-3000:]
    assert DeadLetters(real_redis, layout).total() == len(POISON)
