"""Failures armed by tests: the next N commands of a name fail with an error or hang up."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass
class Fault:
    """An armed failure; ``code`` None means drop the connection instead of replying."""

    command: str
    remaining: int
    code: int | None = None
    message: str | None = None
    labels: list[str] | None = None
    when: Callable[[Mapping], bool] | None = None  # only commands this returns True for


class Faults:
    """Armed faults, consumed in the order they were armed (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[Fault] = []

    def arm(self, fault: Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._armed.append(fault)

    def take(self, command: str, document: Mapping) -> Fault | None:
        """The fault to apply to this command, if one is armed for it."""
        if not self._armed:
            return None
        name = command.lower()
        with self._lock:
            for fault in self._armed:
                if fault.command.lower() == name and (fault.when is None or fault.when(document)):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._armed.remove(fault)
                    return fault
        return None

    def pending(self) -> int:
        """How many failures are still armed (counting repeats)."""
        with self._lock:
            return sum(f.remaining for f in self._armed)

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
