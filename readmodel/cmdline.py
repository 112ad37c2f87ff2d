"""What the two command lines (``projector`` and ``livestatus-api``) share: a parser whose errors
are one line and exit 2, argument types that refuse bad numbers, ``--version``, ``--log-level``
(``LOG_LEVEL``) and the logging set-up from it and ``LOG_FORMAT``. No mutable state.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from . import logs
from .settings import SettingsError


def package_version() -> str:
    try:
        return version("livestatus")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class Parser(argparse.ArgumentParser):
    """argparse, with a one-line error (no usage block) and exit status 2; help is plain text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def whole_number(minimum: int) -> Any:
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
        return value

    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def add_common(parser: argparse.ArgumentParser, env: Mapping[str, str] = os.environ) -> None:
    """``--version`` and ``--log-level`` (default ``LOG_LEVEL``, else info)."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--log-level", type=str.lower, default=env.get("LOG_LEVEL", "info").strip().lower() or "info",
                        metavar="LEVEL",
                        help=f"{', '.join(logs.LEVELS)} (env LOG_LEVEL, default info); LOG_FORMAT=json for JSON lines")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None, env: Mapping[str, str] = os.environ) -> argparse.Namespace:
    """Parse ``argv``, check the log level (flag or ``LOG_LEVEL``) and ``LOG_FORMAT``, and set up
    logging; a bad value exits 2 with one line."""
    args = parser.parse_args(argv)
    if args.log_level not in logs.LEVELS:
        parser.error(f"--log-level / LOG_LEVEL must be one of {', '.join(logs.LEVELS)}, got {args.log_level!r}")
    try:
        fmt = logs.log_format(env)
    except SettingsError as exc:
        parser.error(str(exc))
    logs.configure(args.log_level, fmt, sys.stderr)
    return args
