"""Waiting on a condition (never on a fixed sleep): in tests that watch other processes, and while a
process that tests, benchmarks or the demo started comes up."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout_s: float = 20.0, what: str = "condition") -> float:
    """Poll ``predicate`` every 50 ms until it holds and return how long that took; fail naming
    ``what`` after ``timeout_s``. The default is generous: a passing wait returns as soon as the
    condition holds, and CI runs two suites side by side on two cores."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


class NotUp(RuntimeError):
    """A process did not come up: it exited, or its check did not hold in time."""


def wait_up(what: str, check: Callable[[], object], timeout_s: float, *, exited: Callable[[], str | None] = lambda: None,
            errors: tuple[type[BaseException], ...] = (OSError,), error: type[Exception] = NotUp,
            interval_s: float = 0.1) -> None:
    """Poll ``check`` until it holds while a process starts; an exception in ``errors`` counts as
    "not yet". Raise ``error`` with the message ``exited()`` returns once it returns one (the process
    is gone), or naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reason = exited()
        if reason:
            raise error(reason)
        try:
            if check():
                return
        except errors:
            pass
        time.sleep(interval_s)
    raise error(f"{what} did not come up within {timeout_s:.0f} s")
