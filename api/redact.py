"""Credentials never reach a log line: every log record of the process is redacted when it is made.

uvicorn's access log writes the request path with its query string, where the panel's
``?token=`` sits; exception texts and third-party messages could carry a token or a Redis URL
with a password. Rather than trusting each call site, the process's log record factory redacts
every record's message, arguments and traceback text: ``token`` query values, anything shaped
like a JWT, ``Bearer`` credentials, URL passwords, and the literal service keys and token secret.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
SECRET_QUERY_NAMES = frozenset({"token", "access_token", "key", "api_key"})

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)\S+")
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")
_QUERY_PAIR = re.compile(r"(?<=[?&;])([^=&;#\s]+)=([^&;#\s]*)")

_lock = threading.Lock()
_secrets: set[str] = set()
_secrets_pattern: re.Pattern[str] | None = None
_installed = False


def _query_value(match: re.Match[str]) -> str:
    name = unquote_plus(match.group(1)).strip().lower()
    return f"{match.group(1)}={REDACTED}" if name in SECRET_QUERY_NAMES else match.group(0)


def redact(text: str) -> str:
    """``text`` with every credential it may hold replaced by ``[redacted]``."""
    if _secrets_pattern is not None:
        text = _secrets_pattern.sub(REDACTED, text)
    if "=" in text:
        text = _QUERY_PAIR.sub(_query_value, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def redact_record(record: logging.LogRecord) -> None:
    """Redact ``record`` in place, keeping the shape of its arguments (uvicorn's formatter unpacks them)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_redact_arg(arg) for arg in args)
    elif isinstance(args, dict):
        record.args = {key: _redact_arg(value) for key, value in args.items()}
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def add_secrets(values: Iterable[str | None]) -> None:
    """Redact these literal values (service keys, the token secret) wherever they appear."""
    global _secrets_pattern
    with _lock:
        _secrets.update(value for value in values if value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None


def install(secrets: Iterable[str | None] = ()) -> None:
    """Make every log record of this process redacted (idempotent); ``secrets`` are added."""
    global _installed
    add_secrets(secrets)
    with _lock:
        if _installed:
            return
        make_record = logging.getLogRecordFactory()

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            redact_record(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        _installed = True
