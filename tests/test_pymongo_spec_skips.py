"""The skip list of pymongo's change-stream tests (tests/pymongo_spec/): its format and its matching."""

from __future__ import annotations

import pytest

from tests.pymongo_spec import skips

IDS = [
    "test/test_change_stream.py::TestUnifiedChangeStreamsPreAndPostImages::test_a",
    "test/test_change_stream.py::TestUnifiedChangeStreamsPreAndPostImages::test_b",
    "test/test_change_stream.py::TestCollectionChangeStream::test_watch",
]


def test_every_entry_of_the_kept_list_has_a_reason():
    entries = skips.load()
    assert entries and all(pattern and len(reason) > 20 for pattern, reason in entries)


def test_patterns_skip_matching_tests_with_their_reason_and_leave_the_others():
    reasons, stale = skips.match([("test_change_stream.py::TestUnifiedChangeStreamsPreAndPostImages::*", "images")], IDS)
    assert reasons == {IDS[0]: "images", IDS[1]: "images"}
    assert stale == []


def test_an_entry_matching_no_test_is_reported_stale():
    _, stale = skips.match([("test_change_stream.py::TestGone::test_x", "gone")], IDS)
    assert stale == ["test_change_stream.py::TestGone::test_x"]


@pytest.mark.parametrize("line", ["test_x.py::T::t", "test_x.py::T::t |", " | a reason"])
def test_a_line_without_an_id_and_a_reason_is_a_usage_error(tmp_path, line):
    path = tmp_path / "skips.txt"
    path.write_text(f"# comment\n\n{line}\n")
    with pytest.raises(pytest.UsageError, match=":3:"):
        skips.load(path)
