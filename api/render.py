"""The status message for chat bots, rendered once for every platform.

Telegram gets HTML (``parse_mode=HTML``, the default) or MarkdownV2; Discord gets its markdown.
Every piece of user data goes through the markup's escaping, so a tool named ``<b>_*`` shows as
typed and never breaks the message.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from readmodel.records import epoch_ms as _epoch_ms

BAR_CELLS = 10
IDLE_LINE = "Nothing running right now. Start a generation whenever you like ✨"


@dataclass(frozen=True)
class Markup:
    """How one platform escapes text and marks bold and code."""

    name: str
    parse_mode: str | None
    escape: Callable[[str], str]
    bold: Callable[[str], str]
    code: Callable[[str], str]


_MDV2_SPECIAL = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
_MDV2_CODE_SPECIAL = re.compile(r"([`\\])")
_DISCORD_SPECIAL = re.compile(r"([\\*_~`|>#\-\[\]():])")


def _mdv2(text: str) -> str:
    return _MDV2_SPECIAL.sub(r"\\\1", text)


def _discord(text: str) -> str:
    return _DISCORD_SPECIAL.sub(r"\\\1", text)


TELEGRAM_HTML = Markup(
    "html",
    "HTML",
    escape=lambda t: html.escape(t, quote=False),
    bold=lambda t: f"<b>{t}</b>",
    code=lambda t: f"<code>{html.escape(t, quote=False)}</code>",
)
TELEGRAM_MARKDOWN_V2 = Markup(
    "markdownv2",
    "MarkdownV2",
    escape=_mdv2,
    bold=lambda t: f"*{t}*",
    # Inside code spans only ` and \ are special; callers pass raw text to code().
    code=lambda t: "`" + _MDV2_CODE_SPECIAL.sub(r"\\\1", t) + "`",
)
DISCORD_MARKDOWN = Markup(
    "markdown",
    None,
    escape=_discord,
    bold=lambda t: f"**{t}**",
    code=lambda t: "`" + t.replace("`", "ˋ") + "`",
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


def _task_lines(task: dict[str, Any], m: Markup, now_ms: int) -> list[str]:
    name = task.get("toolDisplayName") or task.get("toolId") or "Task"
    head = f"▸ {m.bold(m.escape(name))} {m.code(task.get('idHash') or '?')} · {m.escape(task.get('status') or '?')}"
    started = _epoch_ms(task.get("startedAt"))
    if started is not None:
        head += m.escape(f" · {duration(now_ms - started)}")
    percent = task.get("progressPercent")
    if percent is None:
        return [head, m.escape("   working…")]
    label = f" {percent:.0f}%"
    if task.get("progressSource") == "estimate":
        label = f" ~{percent:.0f}% (estimate)"
    return [head, f"   {m.code(bar(percent))}{m.escape(label)}"]


def render(snapshot: dict[str, Any], markup: Markup, now_ms: int, limit: int = 5) -> str:
    """The whole status message: balance, points, exp, live tasks (at most ``limit``), or the idle line."""
    m = markup
    balance = snapshot["balance"]
    lines = [
        f"{m.bold(m.escape('Balance'))}{m.escape(': ' + money(balance['usdCredit']))}"
        + m.escape(f" · {balance['points']:,} points · {balance['exp']:,} exp")
    ]
    tasks = snapshot["liveTasks"]
    if not tasks:
        lines.append(m.escape(IDLE_LINE))
        return "\n".join(lines)
    count = len(tasks)
    lines.append(m.bold(m.escape(f"{count} live task{'s' if count != 1 else ''}")))
    for task in tasks[:limit]:
        lines.extend(_task_lines(task, m, now_ms))
    if count > limit:
        lines.append(m.escape(f"…and {count - limit} more"))
    return "\n".join(lines)
