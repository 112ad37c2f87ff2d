"""The chat status text: escaping per platform, money, bars, elapsed time, limits."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.render import (
    DISCORD_MARKDOWN,
    IDLE_LINE,
    TELEGRAM_HTML,
    TELEGRAM_MARKDOWN_V2,
    ZWSP,
    bar,
    duration,
    length,
    money,
    render,
)
from readmodel.records import estimate_percent

MDV2_SPECIAL = set("_*[]()~`>#+-=|{}.!\\")
MENTION = re.compile(r"@(everyone|here)|<[@#][!&]?\d*>?")


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
def test_discord_escaping_round_trips_once_the_mention_breakers_are_removed(text):
    escaped = DISCORD_MARKDOWN.escape(text.replace(ZWSP, ""))
    assert re.sub(r"\\(.)", r"\1", escaped.replace(ZWSP, ""), flags=re.S) == text.replace(ZWSP, "")


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
    assert "T4" in text and "T5" not in text and text.endswith("…and 2 more tasks not shown")


@pytest.mark.parametrize(
    "name",
    ["@everyone", "@here", "<@123456789012345678>", "<@!123456789012345678>", "<@&123456789012345678>",
     "<#123456789012345678>", "hi @everyone and @here"],
)
def test_discord_text_pings_nobody(name):
    text = render(_snapshot([_task(name)]), DISCORD_MARKDOWN, 0)
    assert not MENTION.search(text)
    assert name.replace("@", "").replace("<", "")[:3] in text.replace("\\", "").replace(ZWSP, "")  # still readable


def test_a_message_of_many_long_tasks_fits_and_says_how_many_were_left_out():
    tasks = [_task("N" * 500 + str(i)) for i in range(400)]
    for markup in (TELEGRAM_HTML, TELEGRAM_MARKDOWN_V2, DISCORD_MARKDOWN):
        text = render(_snapshot(tasks), markup, 0, limit=1000)
        assert length(text) <= markup.limit
        shown = text.count("▸ ")
        assert 0 < shown < 400 and text.endswith(f"…and {400 - shown} more tasks not shown".replace(".", "\\."))


# What a user controls: tool names, statuses, ids, and (from the database) balances of any size.
NAMES = (
    st.text(max_size=300)
    | st.text("&<>*_.\\`@#", min_size=40, max_size=300)  # escaping makes these longer
    | st.sampled_from(["@everyone", "<@123>", "<#9>", "<b>", "&amp;", "*_`[", "\n▸ fake"])
)
TASKS = st.fixed_dictionaries(
    {
        "toolDisplayName": NAMES, "toolId": st.text(max_size=40), "idHash": st.text(max_size=40),
        "status": st.text(max_size=80), "startedAt": st.just("2026-11-25T09:00:00.000Z"),
        "progressPercent": st.none() | st.floats(0, 100), "progressSource": st.sampled_from(["reported", "estimate"]),
    }
)
BALANCES = st.fixed_dictionaries(
    {"usdCredit": st.decimals(allow_nan=False, allow_infinity=False, places=6).map(str),
     "points": st.integers(0, 10**40), "exp": st.integers(0, 2**63)}
)


def _html_is_well_formed(text: str) -> bool:
    """Only our tags, properly nested, and only the three entities html.escape makes."""
    stripped = re.sub(r"&(lt|gt|amp);", "", text)
    tags = re.findall(r"<(/?)(b|code)>", stripped)
    stack = []
    for closing, tag in tags:
        if closing:
            if not stack or stack.pop() != tag:
                return False
        else:
            stack.append(tag)
    rest = re.sub(r"</?(b|code)>", "", stripped)
    return not stack and not set(rest) & set("<>&")


def _markdown_is_escaped(text: str, specials: str, escapes_in_code: bool) -> bool:
    """Read left to right: outside code spans, every special character but our bold stars is escaped."""
    in_code, stars, i = False, 0, 0
    while i < len(text):
        char = text[i]
        if char == "\\" and (escapes_in_code or not in_code):
            i += 2  # an escaped character (in code spans too)
            continue
        if char == "`":
            in_code = not in_code
        elif not in_code and char == "*":
            stars += 1
        elif not in_code and char in specials:
            return False
        i += 1
    return not in_code and stars % 2 == 0


@given(tasks=st.integers(0, 120).flatmap(lambda n: st.lists(TASKS, min_size=n, max_size=n)), balance=BALANCES,
       limit=st.integers(1, 200), omitted=st.integers(0, 3) | st.integers(0, 10**6))
@settings(max_examples=150, deadline=None)
def test_every_message_fits_its_platform_is_escaped_and_counts_what_it_left_out(tasks, balance, limit, omitted):
    snapshot = {"version": 1, "balance": balance, "liveTasks": tasks, "liveTasksOmitted": omitted}
    total = len(tasks) + omitted
    for markup in (TELEGRAM_HTML, TELEGRAM_MARKDOWN_V2, DISCORD_MARKDOWN):
        text = render(snapshot, markup, 0, limit=limit)
        assert length(text) <= markup.limit
        lines = text.split("\n")
        shown = sum(line.startswith("▸ ") for line in lines)
        if shown < total:
            assert lines[-1] == markup.escape(f"…and {total - shown} more task{'s' if total - shown != 1 else ''} not shown")
        else:
            assert "not shown" not in lines[-1]
        if markup is TELEGRAM_HTML:
            assert _html_is_well_formed(text)
        elif markup is TELEGRAM_MARKDOWN_V2:
            assert _markdown_is_escaped(text, "_*[]()~`>#+-=|{}.!\\", escapes_in_code=True)
        else:
            assert _markdown_is_escaped(text, "\\*_~`|>#-[]():", escapes_in_code=False) and not MENTION.search(text)


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
