"""projector.times: the quick millisecond conversions give exactly what ``timestamp()`` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from projector.times import datetime_ms, iso, moment, to_utc, wall_ms


def reference_ms(moment: datetime) -> int:
    """The reference: what the projector computed before the quick paths."""
    return int(moment.timestamp() * 1000)


@settings(max_examples=300, deadline=None)  # no wall-clock deadline on a shared machine
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_a_bson_dates_milliseconds_are_what_timestamp_gives(naive):
    assert wall_ms(naive) == reference_ms(naive.replace(tzinfo=UTC))
    assert datetime_ms(naive.replace(tzinfo=UTC)) == reference_ms(naive.replace(tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
       st.integers(min_value=-23 * 60, max_value=23 * 60))
def test_a_moment_with_another_offset_still_counts_from_the_epoch(naive, offset_min):
    moment = naive.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    assert datetime_ms(moment) == reference_ms(moment)
    assert wall_ms(moment) == reference_ms(moment)


def test_an_events_wall_time_in_its_other_forms():
    assert wall_ms("2026-12-03T13:19:42.054Z") == datetime_ms(to_utc("2026-12-03T13:19:42.054Z")) == 1796303982054
    assert wall_ms(None) is None and wall_ms("soon") is None


def _reference_moment(value):
    parsed = to_utc(value)
    return None if parsed is None else (iso(parsed), int(parsed.timestamp() * 1000))


@settings(max_examples=400, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
       st.sampled_from(["%Y-%m-%dT%H:%M:%S.{ms}Z", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.{us}Z",
                        "%Y-%m-%dT%H:%M:%S.{ms}+00:00", "%Y-%m-%dT%H:%M:%S.{ms}+02:00", "%Y-%m-%d %H:%M:%S.{ms}Z",
                        "%Y-%m-%dT%H:%M:%S.{ms}", " %Y-%m-%dT%H:%M:%S.{ms}Z"]))
def test_a_text_moment_is_the_iso_text_and_epoch_ms_of_its_parsed_time(naive, form):
    text = form.replace("%Y", f"{naive.year:04d}").replace("{ms}", f"{naive.microsecond // 1000:03d}").replace(
        "{us}", f"{naive.microsecond:06d}")
    text = naive.strftime(text.replace("%Y", "YEAR")).replace("YEAR", f"{naive.year:04d}")
    assert moment(text) == _reference_moment(text)
    assert moment(text) == _reference_moment(text)  # remembered


def test_a_text_that_only_looks_like_the_iso_form_is_no_moment():
    assert moment("2026-13-03T10:00:00.000Z") is None and moment("2026-12-03T24:00:00.000Z") is None
