"""Progress in every shape producers write it, read as one percentage."""

import math

import pytest
from bson import Decimal128
from hypothesis import given
from hypothesis import strategies as st

from projector.progress import read_progress


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"progressPercent": 47}, 47.0),
        ({"metadata": {"progressPercent": 12.34}}, 12.3),
        ({"progress": 0.5}, 50.0),
        ({"progress": 1}, 100.0),
        ({"progress": 0}, 0.0),
        ({"progress": 73}, 73.0),
        ({"metadata": {"progress": 0.25}}, 25.0),
        ({"progress": "47%"}, 47.0),
        ({"progress": " 47.5 % "}, 47.5),
        ({"progressPercent": "47%"}, 47.0),
        ({"progress": "0.5"}, 50.0),
        ({"progress": {"current": 3, "total": 4}}, 75.0),
        ({"progress": {"percent": 20}}, 20.0),
        ({"currentStep": 5, "totalSteps": 20}, 25.0),
        ({"metadata": {"step": 1, "steps": 3}}, 33.3),
        ({"progressPercent": 100.4}, 100.0),
        ({"progress": Decimal128("0.125")}, 12.5),
    ],
)
def test_reads_each_shape_as_a_percentage(doc, expected):
    assert read_progress(doc) == expected


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"progress": float("nan")},
        {"progressPercent": float("inf")},
        {"progressPercent": -5},
        {"progressPercent": 250},
        {"progress": True},
        {"progress": None},
        {"progress": [0.5]},
        {"progress": {"nested": {"junk": 1}}},
        {"progress": "almost done"},
        {"progress": {"current": 5, "total": 0}},
        {"progress": {"current": 7, "total": 3}},
        {"currentStep": -1, "totalSteps": 3},
        {"metadata": "not a mapping", "progress": "n/a"},
    ],
)
def test_garbage_means_unknown_not_an_error(doc):
    assert read_progress(doc) is None


def test_first_usable_source_wins_and_garbage_falls_through():
    assert read_progress({"progressPercent": "junk", "progress": 0.4}) == 40.0
    assert read_progress({"progressPercent": 10, "progress": 0.9}) == 10.0
    assert read_progress({"progress": -3, "metadata": {"progress": 0.6}}) == 60.0


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["progress", "progressPercent", "current", "total", "step",
                                         "steps", "percent", "metadata", "currentStep", "totalSteps"]),
                        inner, max_size=4), max_leaves=12))
def test_any_input_gives_none_or_a_percentage(value):
    doc = value if isinstance(value, dict) else {"progress": value}
    result = read_progress(doc)
    assert result is None or (0 <= result <= 100 and not math.isnan(result))
