"""The status message for chat bots, rendered once for every platform.

Telegram gets HTML (``parse_mode=HTML``, the default) or MarkdownV2; Discord gets its markdown.
Every piece of user data is put on one line, clipped, and goes through the markup's escaping, so a
tool named ``<b>_*`` shows as typed and never breaks the message; on Discord, mentions in it
(``@everyone``, ``@here``, ``<@id>``, ``<@&id>``, ``<#id>``) are broken with a zero-width space, and
the bot should also send ``allowed_mentions: {"parse": []}`` (:data:`DISCORD_ALLOWED_MENTIONS`).
A message always fits its platform's limit (Telegram 4096, Discord 2000 characters, counted
in UTF-16 code units as both count them, before parsing): the tasks that do not fit are left
out and a last line says how many.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from readmodel.records import epoch_ms as _epoch_ms

BAR_CELLS = 10
IDLE_LINE = "Nothing running right now. Start a generation whenever you like ✨"
TELEGRAM_LIMIT = 4096
DISCORD_LIMIT = 2000
DISCORD_ALLOWED_MENTIONS: dict[str, list[str]] = {"parse": []}  # ping nobody, whatever the text says
NAME_CHARS = 64  # a tool name is clipped to this many characters (with "…")
FIELD_CHARS = 32  # status, id hash, money and counts likewise
ZWSP = "\u200b"
STALLED_MARK = "⚠ stalled"  # a live task that stopped moving (api.stalled)


@dataclass(frozen=True)
class Markup:
    """How one platform escapes text and marks bold and code."""

    name: str
    parse_mode: str | None
    escape: Callable[[str], str]
    bold: Callable[[str], str]
    code: Callable[[str], str]
    limit: int  # the platform's maximum message length


_MDV2_SPECIAL = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
_MDV2_CODE_SPECIAL = re.compile(r"([`\\])")
_DISCORD_SPECIAL = re.compile(r"([\\*_~`|>#\-\[\]():])")


def _mdv2(text: str) -> str:
    return _MDV2_SPECIAL.sub(r"\\\1", text)


def neutralize_mentions(text: str) -> str:
    """Break every Discord mention (``@everyone``, ``<@id>``, ``<#id>``, …) with a zero-width space."""
    return text.replace("@", "@" + ZWSP).replace("<", "<" + ZWSP)


def _discord(text: str) -> str:
    return neutralize_mentions(_DISCORD_SPECIAL.sub(r"\\\1", text))


TELEGRAM_HTML = Markup(
    "html",
    "HTML",
    escape=lambda t: html.escape(t, quote=False),
    bold=lambda t: f"<b>{t}</b>",
    code=lambda t: f"<code>{html.escape(t, quote=False)}</code>",
    limit=TELEGRAM_LIMIT,
)
TELEGRAM_MARKDOWN_V2 = Markup(
    "markdownv2",
    "MarkdownV2",
    escape=_mdv2,
    bold=lambda t: f"*{t}*",
    # Inside code spans only ` and \ are special; callers pass raw text to code().
    code=lambda t: "`" + _MDV2_CODE_SPECIAL.sub(r"\\\1", t) + "`",
    limit=TELEGRAM_LIMIT,
)
DISCORD_MARKDOWN = Markup(
    "markdown",
    None,
    escape=_discord,
    bold=lambda t: f"**{t}**",
    code=lambda t: "`" + neutralize_mentions(t.replace("`", "ˋ")) + "`",
    limit=DISCORD_LIMIT,
)


def markup_for(platform: str, markup: str | None) -> Markup:
    """The markup of ``platform`` (``markup`` picks Telegram's html or markdownv2)."""
    if platform == "discord":
        return DISCORD_MARKDOWN
    return TELEGRAM_MARKDOWN_V2 if markup == "markdownv2" else TELEGRAM_HTML


def money(usd: str) -> str:
    """'1.250000' -> '$1.25', '0.012469' -> '$0.012469', '3' -> '$3.00' (exact, never rounded)."""
    try:
        number = Decimal(usd)
    except (InvalidOperation, TypeError):
        return f"${usd}"
    text = format(number.normalize(), "f") if number != 0 else "0"
    whole, _, frac = text.partition(".")
    frac = frac.ljust(2, "0")
    return f"${int(whole.lstrip('-') or 0):,}.{frac}".replace("$", "-$" if number < 0 else "$")


def duration(ms: int) -> str:
    """2h 5m, 3m 7s, 12s."""
    seconds = max(0, ms // 1000)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds}s"


def bar(percent: float) -> str:
    filled = max(0, min(BAR_CELLS, round(percent / 100 * BAR_CELLS)))
    return "▰" * filled + "▱" * (BAR_CELLS - filled)


def clip(text: str, chars: int) -> str:
    """``text`` on one line (whitespace runs become one space), at most ``chars`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


def length(text: str) -> int:
    """The length Telegram and Discord count: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _task_lines(task: dict[str, Any], m: Markup, now_ms: int) -> list[str]:
    name = clip(task.get("toolDisplayName") or task.get("toolId") or "Task", NAME_CHARS)
    id_hash = clip(task.get("idHash") or "?", FIELD_CHARS)
    status = clip(task.get("status") or "?", FIELD_CHARS)
    head = f"▸ {m.bold(m.escape(name))} {m.code(id_hash)} · {m.escape(status)}"
    started = _epoch_ms(task.get("startedAt"))
    if started is not None:
        head += m.escape(f" · {duration(now_ms - started)}")
    if task.get("stalled"):
        head += m.escape(" · ") + m.bold(m.escape(STALLED_MARK))
    percent = task.get("progressPercent")
    if percent is None:
        return [head, m.escape("   working…")]
    label = f" {percent:.0f}%"
    if task.get("progressSource") == "estimate":
        label = f" ~{percent:.0f}% (estimate)"
    return [head, f"   {m.code(bar(percent))}{m.escape(label)}"]


def left_out_line(count: int) -> str:
    """The last line of a message that could not list every task."""
    return f"…and {count} more task{'s' if count != 1 else ''} not shown"


def render(snapshot: dict[str, Any], markup: Markup, now_ms: int, limit: int = 5) -> str:
    """The whole status message: balance, points, exp, live tasks, or the idle line.

    At most ``limit`` tasks are listed, fewer when the message would not fit ``markup.limit``;
    then a last line says how many were left out.
    """
    m = markup
    balance = snapshot["balance"]
    usd = clip(money(balance["usdCredit"]), FIELD_CHARS)
    points, exp = (clip(f"{balance[name]:,}", FIELD_CHARS) for name in ("points", "exp"))
    text = f"{m.bold(m.escape('Balance'))}{m.escape(': ' + usd)}" + m.escape(f" · {points} points · {exp} exp")
    tasks = snapshot["liveTasks"]
    count = len(tasks) + snapshot.get("liveTasksOmitted", 0)  # the snapshot itself may list only some
    if not count:
        return text + "\n" + m.escape(IDLE_LINE)
    text += "\n" + m.bold(m.escape(f"{count} live task{'s' if count != 1 else ''}"))
    shown = 0
    for task in tasks[:limit]:
        candidate = text + "\n" + "\n".join(_task_lines(task, m, now_ms))
        rest = count - shown - 1
        if length(candidate + ("\n" + m.escape(left_out_line(rest)) if rest else "")) > m.limit:
            break
        text, shown = candidate, shown + 1
    if count > shown:
        text += "\n" + m.escape(left_out_line(count - shown))
    return text
