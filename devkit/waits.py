"""Waiting on a condition (never on a fixed sleep) in tests that watch other processes."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout_s: float = 5.0, what: str = "condition") -> float:
    """Poll ``predicate`` every 50 ms until it holds and return how long that took; fail naming
    ``what`` after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")
