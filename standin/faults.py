"""Injected failures: faults armed by tests through ``StandIn``, and the server's ``failCommand``
fail point (``configureFailPoint``), which drivers' own test suites set over the wire."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import CommandError


@dataclass
class Fault:
    """An armed failure of the next ``remaining`` commands named in ``commands`` (None: forever).

    ``code`` None and ``close`` False with a block: the command runs normally after the block.
    """

    commands: frozenset[str]
    remaining: int | None
    code: int | None = None
    message: str | None = None
    labels: list[str] | None = None  # None: labelled by the server's rules if server_labels, else none
    server_labels: bool = True
    close: bool = False  # drop the connection instead of replying
    block_seconds: float = 0.0
    app_name: str | None = None  # only connections that said this appName in their handshake
    when: Callable[[Mapping], bool] | None = None  # only commands this returns True for
    skip: int = 0  # let this many matching commands through first

    def matches(self, name: str, command: Mapping, app_name: str | None) -> bool:
        return (
            name.lower() in self.commands
            and (self.app_name is None or self.app_name == app_name)
            and (self.when is None or self.when(command))
        )


FAIL_POINTS = ("failCommand", "failGetMoreAfterCursorCheckout")


def fail_point(command: Mapping) -> Fault | None:
    """The fault a ``configureFailPoint`` command asks for (None: mode off).

    ``failCommand`` fails the listed commands before they run, with exactly the labels given
    (none by default); ``failGetMoreAfterCursorCheckout`` fails getMore once it holds the cursor,
    labelled the way the server labels that error code (ResumableChangeStreamError...).
    """
    name = command.get("configureFailPoint")
    if name not in FAIL_POINTS:
        raise CommandError(2, f"the stand-in has only the fail points {FAIL_POINTS}, not {name!r}")
    mode, data = command.get("mode"), dict(command.get("data") or {})
    if name == "failGetMoreAfterCursorCheckout":
        data.setdefault("failCommands", ["getMore"])
    remaining, skip = None, 0
    if mode == "off":
        return None
    if isinstance(mode, Mapping) and set(mode) <= {"times", "skip"} and mode:
        remaining, skip = mode.get("times"), int(mode.get("skip", 0))
        if remaining is not None and int(remaining) < 1:
            return None
    elif mode != "alwaysOn":
        raise CommandError(2, f"unsupported fail point mode {mode!r}")
    unsupported = set(data) - {"failCommands", "errorCode", "errorLabels", "closeConnection", "blockConnection",
                               "blockTimeMS", "appName", "failInternalCommands"}
    if unsupported:
        raise CommandError(2, f"the stand-in's failCommand does not support {sorted(unsupported)}")
    commands = data.get("failCommands")
    if not isinstance(commands, list) or not commands:
        raise CommandError(2, "failCommand needs data.failCommands, a non-empty list of command names")
    code = data.get("errorCode")
    return Fault(
        frozenset(str(name).lower() for name in commands),
        None if remaining is None else int(remaining),
        code=None if code is None else int(code),
        message="Failing command via 'failCommand' failpoint",
        labels=data.get("errorLabels"),
        server_labels=name != "failCommand",
        close=bool(data.get("closeConnection")),
        block_seconds=data.get("blockTimeMS", 0) / 1000 if data.get("blockConnection") else 0.0,
        app_name=data.get("appName"),
        skip=skip,
    )


class Faults:
    """Faults armed by tests (consumed in the order they were armed) and the fail point."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[Fault] = []
        self._fail_points: dict[str, Fault] = {}

    def arm(self, fault: Fault) -> None:
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._armed.append(fault)

    def set_fail_point(self, name: str, fault: Fault | None) -> None:
        """Replace the fail point ``name`` (None turns it off)."""
        with self._lock:
            if fault is None:
                self._fail_points.pop(name, None)
            else:
                self._fail_points[name] = fault

    def take(self, command: str, document: Mapping, app_name: str | None = None) -> Fault | None:
        """The fault to apply to this command, if one is armed for it."""
        if not self._armed and not self._fail_points:
            return None
        with self._lock:
            for fault in self._armed:
                if fault.matches(command, document, app_name):
                    self._consume(fault)
                    return fault
            for name, fault in self._fail_points.items():
                if not fault.matches(command, document, app_name):
                    continue
                if fault.skip:
                    fault.skip -= 1
                    return None
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del self._fail_points[name]
                return fault
        return None

    def _consume(self, fault: Fault) -> None:
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining == 0:
                self._armed.remove(fault)

    def pending(self) -> int:
        """How many failures tests armed that have not fired yet (counting repeats)."""
        with self._lock:
            return sum(f.remaining or 0 for f in self._armed)

    def clear(self) -> None:
        """Disarm everything, the fail point included."""
        with self._lock:
            self._armed.clear()
            self._fail_points.clear()
