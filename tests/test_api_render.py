"""The chat status text: escaping per platform, money, bars, elapsed time, limits."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.render import DISCORD_MARKDOWN, IDLE_LINE, TELEGRAM_HTML, TELEGRAM_MARKDOWN_V2, bar, duration, money, render
from readmodel.records import estimate_percent

MDV2_SPECIAL = set("_*[]()~`>#+-=|{}.!\\")


def _snapshot(tasks: list[dict], usd: str = "1.250000") -> dict:
    return {"version": 3, "balance": {"usdCredit": usd, "points": 3378, "exp": 42}, "liveTasks": tasks}


def _task(name: str = "FLUX", percent: float | None = 47.0, source: str | None = "reported") -> dict:
    return {
        "toolDisplayName": name, "toolId": "flux", "idHash": "f21b0", "status": "processing",
        "startedAt": "2026-11-25T09:00:00.000Z", "progressPercent": percent, "progressSource": source,
    }


@given(st.text())
def test_markdownv2_escaping_leaves_no_special_character_unescaped_and_round_trips(text):
    escaped = TELEGRAM_MARKDOWN_V2.escape(text)
    assert re.sub(r"\\(.)", r"\1", escaped, flags=re.S) == text
    unescaped = re.sub(r"\\.", "", escaped, flags=re.S)
    assert not (set(unescaped) & MDV2_SPECIAL)


@given(st.text())
def test_html_escaping_leaves_no_tag_or_entity_start(text):
    escaped = TELEGRAM_HTML.escape(text)
    assert "<" not in escaped and ">" not in escaped
    assert escaped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == text


@given(st.text())
def test_discord_escaping_round_trips(text):
    escaped = DISCORD_MARKDOWN.escape(text)
    assert re.sub(r"\\(.)", r"\1", escaped, flags=re.S) == text


def test_telegram_markdownv2_message_escapes_the_tool_name_and_the_dots_of_money():
    text = render(_snapshot([_task("my_tool (v1.2)*")]), TELEGRAM_MARKDOWN_V2, 0)
    assert "*Balance*: $1\\.25" in text
    assert "my\\_tool \\(v1\\.2\\)\\*" in text


def test_discord_message_uses_double_star_bold():
    text = render(_snapshot([_task()]), DISCORD_MARKDOWN, 0)
    assert text.startswith("**Balance**") and "**FLUX**" in text and "`▰▰▰▰▰▱▱▱▱▱`" in text


def test_an_idle_user_gets_the_friendly_line():
    assert render(_snapshot([]), TELEGRAM_HTML, 0).endswith(IDLE_LINE)


def test_past_the_limit_the_rest_is_counted():
    text = render(_snapshot([_task(f"T{i}") for i in range(7)]), TELEGRAM_HTML, 0, limit=5)
    assert "T4" in text and "T5" not in text and text.endswith("…and 2 more")


def test_estimates_and_unknown_progress_are_labelled_as_such():
    text = render(_snapshot([_task("E", 33.3, "estimate"), _task("U", None, None)]), TELEGRAM_HTML, 0)
    assert "~33% (estimate)" in text and "working…" in text


@pytest.mark.parametrize(
    "usd, shown",
    [("1.250000", "$1.25"), ("0.012469", "$0.012469"), ("3", "$3.00"), ("1234567.5", "$1,234,567.50"),
     ("0", "$0.00"), ("-2.5", "-$2.50"), ("1E+2", "$100.00")],
)
def test_money_is_exact_with_at_least_cents(usd, shown):
    assert money(usd) == shown


@pytest.mark.parametrize("percent, cells", [(0, 0), (4, 0), (5, 0), (6, 1), (47, 5), (100, 10), (130, 10)])
def test_bars_have_ten_cells(percent, cells):
    assert bar(percent) == "▰" * cells + "▱" * (10 - cells)


@pytest.mark.parametrize("ms, shown", [(12_000, "12s"), (187_000, "3m 7s"), (7_500_000, "2h 5m"), (-5, "0s")])
def test_elapsed_time_is_compact(ms, shown):
    assert duration(ms) == shown


def test_an_estimate_is_elapsed_over_typical_duration_capped_below_done():
    start = "2026-11-25T09:00:00.000Z"
    start_ms = 1795597200000
    assert estimate_percent(start, 60_000, start_ms + 30_000, 95) == 50.0
    assert estimate_percent(start, 60_000, start_ms + 600_000, 95) == 95
    assert estimate_percent(start, 60_000, start_ms - 5_000, 95) == 0
    assert estimate_percent(None, 60_000, start_ms, 95) is None
