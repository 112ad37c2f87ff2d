"""pytest plugin for scripts/pymongo-spec: skips the tests listed in skips.txt, with their reason.

Each line of skips.txt is ``<test id> | <reason>``; the id is a test's node id below ``test/``
(``test_change_stream.py::Class::test_name``) and may end with ``*``. A listed id that matches no
test fails the run, so the list cannot silently go stale when pymongo renames a test.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import pytest

SKIPS = Path(__file__).with_name("skips.txt")


def load(path: Path = SKIPS) -> list[tuple[str, str]]:
    """``(pattern, reason)`` for every entry of the list."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, reason = (part.strip() for part in line.partition("|"))
        if not sep or not pattern or not reason:
            raise pytest.UsageError(f"{path}:{number}: expected '<test id> | <reason>', got {line!r}")
        entries.append((pattern, reason))
    return entries


def match(entries: list[tuple[str, str]], node_ids: list[str]) -> tuple[dict[str, str], list[str]]:
    """``(node id -> reason for each listed test, patterns that matched nothing)``."""
    reasons, used = {}, set()
    for node in node_ids:
        for pattern, reason in entries:
            if fnmatchcase(node.removeprefix("test/"), pattern):
                reasons[node] = reason
                used.add(pattern)
                break
    return reasons, [pattern for pattern, _ in entries if pattern not in used]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons, stale = match(load(), [item.nodeid for item in items])
    for item in items:
        if item.nodeid in reasons:
            item.add_marker(pytest.mark.skip(reason=f"livestatus skip list: {reasons[item.nodeid]}"))
    # Only when the whole file was collected: a -k or ::name selection leaves entries unmatched.
    if stale and not config.option.keyword and all("::" not in arg for arg in config.args):
        raise pytest.UsageError(f"{SKIPS}: entries matching no test: {stale}")
