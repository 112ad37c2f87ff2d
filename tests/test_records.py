"""A stored record's JSON: orjson's fast path writes exactly the bytes of the reference encoder."""

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from readmodel import records
from readmodel.records import finished_task_record, live_task_record


def reference(record):
    return json.dumps(record, separators=(",", ":"))


values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(), st.floats(min_value=0, max_value=100).map(lambda f: round(f, 1)),
    st.text(), st.text(st.characters(max_codepoint=0x7F)),
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=14))
@example({"s": "caf\u00e9", "d": "\x7f", "c": "\x00\x1f\n\"\\", "x": "\ud800"})
def test_a_record_is_written_as_the_reference_encoder_writes_it(record):
    try:
        expected = reference(record)
    except Exception as exc:  # the reference refuses it: the record's encoding must too
        with pytest.raises(type(exc)):
            records._json(record)
        return
    assert records._json(record) == expected


@pytest.mark.parametrize("value", [1e-05, 9.99e-05, 1e-4, 1e15, 1e16, 1.5e300, 5e-324, float("nan"), float("-inf"), -0.0,
                                   0.0, 100.0, 2**63 - 1, 2**64, -(2**63) - 1])
def test_numbers_at_the_edges_of_the_fast_path_are_written_as_the_reference_writes_them(value):
    assert records._json({"progressPercent": value, "staleAt": 1}) == reference({"progressPercent": value, "staleAt": 1})


def test_a_typical_record_takes_the_fast_path(monkeypatch):
    if records._fast_dumps is None:
        pytest.skip("orjson is not installed: the reference encoder is the only path")

    def refuse(_record):
        raise AssertionError("the reference encoder was called")

    monkeypatch.setattr(records, "_reference_json", refuse)
    visible = {"generationId": "g1", "idHash": "abcde", "status": "processing", "progressPercent": 42.5,
               "progressSource": "reported", "toolId": "flux", "toolDisplayName": "Flux", "costUsd": "0.01",
               "startedAt": "2026-12-03T10:00:00.000Z", "updatedAt": "2026-12-03T10:00:01.000Z",
               "sourcePlatform": "telegram"}
    assert json.loads(live_task_record(visible, 1200, 1796320641000))["progressPercent"] == 42.5
    assert json.loads(finished_task_record(visible, 1796320641000))["finishedAtMs"] == 1796320641000
