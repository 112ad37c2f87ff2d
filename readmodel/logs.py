"""Logging for both processes, set up once by their command lines: text with timestamps, or one
JSON object per line (``LOG_FORMAT=json``) for a log collector.

Every logger goes through the root logger's one handler on stderr, uvicorn's included (the API
hands uvicorn ``log_config=None`` and :func:`configure` clears the handlers uvicorn's loggers may
carry), so a process never mixes two formats. No mutable state here: the handler belongs to the
root logger, configured once at start-up on the main thread.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

from .settings import SettingsError

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HANDLER_NAME = "livestatus"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and the
    traceback as one string when there is one (newlines escaped, so still one line)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_format(env: Mapping[str, str]) -> str:
    """``LOG_FORMAT`` from ``env``: ``text`` (the default) or ``json``."""
    raw = env.get("LOG_FORMAT", "").strip().lower() or "text"
    if raw not in FORMATS:
        raise SettingsError(f"LOG_FORMAT must be text or json, got {env.get('LOG_FORMAT')!r}")
    return raw


def configure(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr) in format ``fmt``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    # Replaces the handler of an earlier call only (a test harness may have its own).
    root.handlers[:] = [*(h for h in root.handlers if h.get_name() != HANDLER_NAME), handler]
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("pymongo").setLevel(max(logging.WARNING, root.level))
