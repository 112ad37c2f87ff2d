"""Raw generationOutputs / userEconomy documents become tasks and balances, or rejections."""

from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from bson import SON, Decimal128, Int64, ObjectId
from hypothesis import example, given, settings
from hypothesis import strategies as st

from projector.normalize import Balance, Invalid, Rules, Task, is_stale, normalize_balance, normalize_task
from projector.values import (
    account_id,
    decimal128_decimal,
    decimal_text,
    exact_decimal,
    id_hash,
    is_mapping,
    money_text,
    normalize_status,
)

OID = ObjectId("65f1c0ffee0000000000abcd")
USER = ObjectId("65f1c0ffee00000000001234")


def task_doc(**fields):
    doc = {"_id": OID, "masterAccountId": USER, "status": "processing", "toolId": "flux"}
    doc.update(fields)
    return doc


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("pending", "pending"), ("  COMPLETED ", "completed"), ("Cancelled by user", "cancelled_by_user"),
     ("payment-failed", "payment_failed"), ("", None), (3, None), (None, None)],
)
def test_status_is_normalized(raw, expected):
    assert normalize_status(raw) == expected


@pytest.mark.parametrize("status", ["pending", "queued", "waiting", "processing", "running", "Brewing"])
def test_live_statuses_and_unknown_ones_are_live(status):
    task = normalize_task(task_doc(status=status))
    assert isinstance(task, Task) and task.live


@pytest.mark.parametrize(
    "status",
    ["completed", "success", "succeeded", "failed", "payment_failed", "cancelled", "cancelled_by_user",
     "timeout", "error", " Failed "],
)
def test_terminal_statuses_are_not_live(status):
    task = normalize_task(task_doc(status=status))
    assert isinstance(task, Task) and not task.live


def test_status_sets_are_configurable():
    rules = Rules(terminal=frozenset({"done"}))
    assert not normalize_task(task_doc(status="done"), rules).live
    assert normalize_task(task_doc(status="completed"), rules).live


def test_unknown_status_is_shown_by_name_without_progress():
    task = normalize_task(task_doc(status="Brewing"))
    assert (task.visible["status"], task.visible["progressPercent"], task.visible["progressSource"]) == ("brewing", None, None)


@pytest.mark.parametrize(
    ("fields", "percent", "source"),
    [
        ({"status": "pending"}, 0.0, "status"),
        ({"status": "queued", "progress": 0.3}, 30.0, "reported"),
        ({"status": "processing"}, None, None),
        ({"status": "processing", "metadata": {"progress": "47%"}}, 47.0, "reported"),
        ({"status": "completed"}, 100.0, "status"),
    ],
)
def test_progress_is_reported_or_derived_from_status(fields, percent, source):
    task = normalize_task(task_doc(**fields))
    assert (task.visible["progressPercent"], task.visible["progressSource"]) == (percent, source)


@pytest.mark.parametrize(
    ("owner", "expected"),
    [(USER, str(USER)), ("x402:0x1821abCD", "x402:0x1821abCD"), ("  tg_12345 ", "tg_12345")],
)
def test_master_account_id_keys_use_its_string_form(owner, expected):
    assert normalize_task(task_doc(masterAccountId=owner)).owner == expected


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ("not a doc", "not a mapping"),
        (task_doc(_id=None), "_id"),
        (task_doc(masterAccountId=None), "masterAccountId"),
        (task_doc(masterAccountId="has spaces inside"), "masterAccountId"),
        (task_doc(masterAccountId="a" * 200), "masterAccountId"),
        (task_doc(masterAccountId=12), "masterAccountId"),
        (task_doc(status=None), "status"),
        (task_doc(status={"$set": 1}), "status"),
        (task_doc(costUsd="twelve"), "costUsd"),
        (task_doc(costUsd=float("nan")), "costUsd"),
        (task_doc(costUsd=Decimal128("Infinity")), "costUsd"),
    ],
)
def test_bad_documents_are_rejected_with_a_reason(doc, reason):
    result = normalize_task(doc)
    assert isinstance(result, Invalid) and reason in result.reason


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (Decimal128("0.012469"), "0.012469"),
        (0.1, "0.1"),
        (0.012469, "0.012469"),
        (3, "3"),
        (Int64(7), "7"),
        ("0.50", "0.50"),
        (Decimal128("1E+2"), "100"),
        (Decimal128("-0"), "0"),
        (Decimal128("1.2E-7"), "0.00000012"),
    ],
)
def test_money_is_exact(raw, text):
    assert normalize_task(task_doc(costUsd=raw)).visible["costUsd"] == text


def test_absent_cost_is_null():
    assert normalize_task(task_doc()).visible["costUsd"] is None


def test_id_hash_is_first_five_hex_of_sha256_of_the_id_string():
    import hashlib

    task = normalize_task(task_doc())
    assert task.visible["idHash"] == hashlib.sha256(str(OID).encode()).hexdigest()[:5] == id_hash(str(OID))
    assert task.visible["generationId"] == str(OID)


def test_timestamps_from_bson_dates_and_iso_strings_come_out_iso_utc():
    task = normalize_task(
        task_doc(requestTimestamp=datetime(2026, 11, 25, 8, 0, 0, 123456), updatedAt="2026-11-25T10:30:00+02:00")
    )
    assert task.visible["startedAt"] == "2026-11-25T08:00:00.123Z"
    assert task.visible["updatedAt"] == "2026-11-25T08:30:00.000Z"


@pytest.mark.parametrize(
    ("fields", "updated"),
    [
        ({"updatedAt": "2026-01-01T00:00:03Z", "responseTimestamp": "2026-01-01T00:00:02Z"}, "2026-01-01T00:00:03.000Z"),
        ({"responseTimestamp": "2026-01-01T00:00:02Z"}, "2026-01-01T00:00:02.000Z"),
        ({"updatedAt": "garbage", "responseTimestamp": "2026-01-01T00:00:02Z"}, "2026-01-01T00:00:02.000Z"),
        ({}, "2026-01-01T00:00:01.000Z"),
    ],
)
def test_updated_at_falls_back_to_response_then_request_time(fields, updated):
    task = normalize_task(task_doc(requestTimestamp="2026-01-01T00:00:01Z", **fields))
    assert task.visible["updatedAt"] == updated


def test_platform_tool_and_display_name():
    task = normalize_task(
        task_doc(notificationPlatform="telegram", sourcePlatform="web", toolDisplayName="FLUX dev")
    )
    shown = task.visible
    assert (shown["sourcePlatform"], shown["toolId"], shown["toolDisplayName"]) == ("telegram", "flux", "FLUX dev")
    assert normalize_task(task_doc(sourcePlatform="discord")).visible["sourcePlatform"] == "discord"


def test_stale_after_the_configured_age_without_a_sign_of_life():
    task = normalize_task(task_doc(updatedAt=datetime(2026, 1, 1, tzinfo=UTC)))
    start = task.last_activity_ms
    rules = Rules(stale_after_ms=1000)
    assert not is_stale(task, start + 1000, rules)
    assert is_stale(task, start + 1001, rules)


# ---------------------------------------------------------------------------- balances


def econ_doc(**fields):
    doc = {"_id": ObjectId(), "masterAccountId": USER, "usdCredit": Decimal128("1.000000"), "exp": Int64(42)}
    doc.update(fields)
    return doc


@pytest.mark.parametrize(
    ("credit", "text", "points"),
    [
        (Decimal128("1.000000"), "1.000000", 2702),
        (Decimal128("0.012469"), "0.012469", 33),
        (0.00037, "0.00037", 1),
        (0.00036, "0.00036", 0),
        ("5", "5", 13513),
        (10, "10", 27027),
    ],
)
def test_balance_is_exact_and_points_are_floored(credit, text, points):
    balance = normalize_balance(econ_doc(usdCredit=credit))
    assert balance == Balance(owner=str(USER), usd_credit=text, points=points, exp=42)


def test_points_rate_is_configurable():
    assert normalize_balance(econ_doc(usdCredit="1"), Rules(points_rate=Decimal("0.5"))).points == 2


def test_legacy_balance_usd_is_read_when_usd_credit_is_absent():
    doc = econ_doc(balanceUsd=Decimal128("2.5"))
    del doc["usdCredit"]
    assert normalize_balance(doc).usd_credit == "2.5"


def test_missing_credit_and_exp_are_zero():
    doc = {"_id": 1, "masterAccountId": "x402:0xabc"}
    assert normalize_balance(doc) == Balance(owner="x402:0xabc", usd_credit="0", points=0, exp=0)


@pytest.mark.parametrize(("raw", "exp"), [(Int64(5), 5), (5, 5), (5.9, 5), (Decimal128("12"), 12), ("17", 17)])
def test_exp_from_every_numeric_shape(raw, exp):
    assert normalize_balance(econ_doc(exp=raw)).exp == exp


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"usdCredit": "lots"}, "usdCredit"),
        ({"usdCredit": float("inf")}, "usdCredit"),
        ({"exp": "many"}, "exp"),
        ({"exp": True}, "exp"),
        ({"masterAccountId": None}, "masterAccountId"),
    ],
)
def test_bad_balance_documents_are_rejected(fields, reason):
    result = normalize_balance(econ_doc(**fields))
    assert isinstance(result, Invalid) and reason in result.reason


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-10**6, max_value=10**6))
def test_decimal128_round_trips_exactly(number):
    assert exact_decimal(Decimal128(number)) == number
    assert Decimal(decimal_text(number)) == number



WORD = st.integers(min_value=0, max_value=2**64 - 1)


def _ordinary(sign, biased_exponent, coefficient):
    """The two words of an ordinary Decimal128: sign, 14-bit exponent, 113-bit coefficient."""
    return sign << 63 | biased_exponent << 49 | coefficient >> 64, coefficient & (2**64 - 1)


ORDINARY = st.builds(_ordinary, st.integers(0, 1), st.integers(0, 3 * 2**12 - 1),
                     st.one_of(st.integers(0, 10**34 - 1), st.integers(0, 10**7)))


@settings(max_examples=1000)
@given(st.one_of(st.tuples(WORD, WORD), ORDINARY))
@example((0x3040000000000000, 12469))  # 0.012469 would be 12469E-6: an ordinary price
@example((0x3040000000000000 | (1 << 63), 0))  # -0
@example((0x0001ED09BEAD87C0, 0x378D8E63FFFFFFFF))  # 10**34 - 1, the largest ordinary coefficient
@example((0x0001ED09BEAD87C0, 0x378D8E6400000000))  # 10**34: beyond it, read as zero
@example((0x7800000000000000, 0))  # Infinity
@example((0x7C00000000000000, 0))  # NaN
@example((0x6000000000000000, 1))  # the large-coefficient form
def test_a_decimal128_reads_as_bson_reads_it(words):
    value = Decimal128(words)
    fast, reference = decimal128_decimal(value), value.to_decimal()
    assert (str(fast), fast.as_tuple()) == (str(reference), reference.as_tuple())

ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.builds(ObjectId)
    | st.sampled_from([Decimal128("NaN"), Decimal128("-Infinity"), Decimal128("0.5"), Decimal128("-1E+6000")]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
FIELDS = ["_id", "masterAccountId", "status", "costUsd", "progress", "progressPercent", "metadata",
          "requestTimestamp", "updatedAt", "responseTimestamp", "usdCredit", "exp", "toolId"]


@given(st.dictionaries(st.sampled_from(FIELDS), ANY) | ANY)
def test_no_input_raises_out_of_the_core(doc):
    assert isinstance(normalize_task(doc), (Task, Invalid))
    assert isinstance(normalize_balance(doc), (Balance, Invalid))


FIELD_VALUES = st.one_of(st.none(), st.integers(-5, 150), st.floats(allow_nan=True), st.text(max_size=6),
                         st.sampled_from(["pending", "processing", "completed", "47%", "2026-11-25T08:00:00Z"]),
                         st.builds(ObjectId), st.sampled_from([Decimal128("0.012469"), Decimal128("NaN")]))
NESTED = st.dictionaries(st.sampled_from(["progress", "progressPercent", "current", "total", "step", "steps",
                                          "currentStep", "totalSteps", "toolDisplayName", "prompt", "seed"]),
                         FIELD_VALUES, max_size=5)
RICH_DOCS = st.dictionaries(
    st.sampled_from([*FIELDS, "prompt", "outputs", "notificationPlatform", "sourcePlatform", "toolDisplayName",
                              "currentStep", "totalSteps", "step", "steps", "current", "total", "balanceUsd"]),
    FIELD_VALUES | NESTED, max_size=10,
).flatmap(lambda d: NESTED.map(
    lambda meta: {"_id": ObjectId(), "masterAccountId": "u1", "status": "processing", "metadata": meta, **d}))
STEP_EXAMPLES = [{key: 1, total: 4} for key, total in (("currentStep", "totalSteps"), ("step", "steps"),
                                                       ("current", "total"))]


def _step_examples(test):
    for fields in STEP_EXAMPLES:
        test = example({"_id": 1, "masterAccountId": "u1", "status": "running", **fields})(test)
        test = example({"_id": 1, "masterAccountId": "u1", "status": "running", "metadata": fields})(test)
    return example({"_id": 1, "masterAccountId": "u1", "status": "failed", "requestTimestamp": "2026-11-25T08:00:00Z",
                    "responseTimestamp": "2026-11-25T08:00:09Z", "notificationPlatform": "discord"})(test)


@settings(max_examples=500)
@_step_examples
@given(RICH_DOCS)
def test_the_change_stream_projection_keeps_everything_normalization_reads(doc):
    from projector.normalize import BALANCE_DOCUMENT_FIELDS, TASK_DOCUMENT_FIELDS
    from standin.projection import stage_projector

    assert normalize_task(stage_projector(dict.fromkeys(TASK_DOCUMENT_FIELDS, 1))(doc)) == normalize_task(doc)
    assert normalize_balance(stage_projector(dict.fromkeys(BALANCE_DOCUMENT_FIELDS, 1))(doc)) == normalize_balance(doc)


class _Frozen(Mapping):
    def __init__(self, data):
        self.data = data

    def __getitem__(self, key):
        return self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)


class _Text(str):
    pass


@pytest.mark.parametrize("value", [{}, {"a": 1}, _Frozen({"a": 1}), OrderedDict(), SON(), None, "x", _Text("x"), 1, 1.5,
                                   True, Int64(2), Decimal128("1"), [], (), b"", ObjectId()])
def test_is_mapping_is_the_mapping_abcs_answer(value):
    assert is_mapping(value) is isinstance(value, Mapping)


@pytest.mark.parametrize(("raw", "expected"), [("u1", "u1"), (" u1 ", "u1"), ("u 1", None), ("{u1}", None), ("", None),
                                               ("x" * 128, "x" * 128), ("x" * 129, None), ("x" * 300, None)])
def test_an_account_id_reads_the_same_the_second_time(raw, expected):
    assert account_id(raw) == expected and account_id(raw) == expected


@pytest.mark.parametrize("raw", [Decimal128("0.012469"), Decimal128("-0"), Decimal128("1E+2"), "0.5", 3])
def test_a_price_text_is_the_exact_decimals_text_the_second_time_too(raw):
    from projector.values import money

    assert money_text("costUsd", raw) == decimal_text(money("costUsd", raw)) == money_text("costUsd", raw)
