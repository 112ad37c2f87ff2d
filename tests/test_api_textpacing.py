"""The live chat text's pacing exactly: :func:`api.textstream.text_frames` in-process, each event
stamped on the loop's clock the moment the body yields it, so no network or scheduling delay sits
between the send and the stamp. The end-to-end tests (tests/test_api_textstream.py, the Node
example's /status live edits) see the events through a socket and check the schedule instead:
one late delivery there shortens the gap after it, here nothing does."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

from api.mailbox import Mailbox
from api.snapshots import SharedSnapshot
from api.textstream import text_frames

INTERVAL_S = 0.05


def snapshot(version: int, live: bool = True) -> dict[str, Any]:
    return {"version": version, "liveTasks": [{"progressPercent": version}] if live else [], "shown": version}


async def read_paced(changes: int, pause_s: float) -> list[tuple[float, str, bool]]:
    """Offer ``changes`` newer snapshots ``pause_s`` apart, then one with nothing live; the events
    the body sends, each as (loop time when yielded, text, final)."""
    loop = asyncio.get_running_loop()
    mailbox = Mailbox("u1", sent_version=1)
    newest = snapshot(1)

    async def reread() -> dict[str, Any]:
        return newest

    async def write() -> None:
        nonlocal newest
        for version in range(2, changes + 2):
            await asyncio.sleep(pause_s)
            newest = snapshot(version)
            mailbox.offer(SharedSnapshot(newest))
        await asyncio.sleep(pause_s)
        mailbox.offer(SharedSnapshot(snapshot(changes + 2, live=False)))

    body = text_frames(newest, mailbox, reread, lambda state: f"{state['shown']}", lambda _state, text, final:
                       (text, final), INTERVAL_S, heartbeat_s=60.0, retry_ms=1000)  # type: ignore[arg-type,return-value]
    writer = asyncio.create_task(write())
    events = [(loop.time(), *frame) async for frame in body if isinstance(frame, tuple)]
    await writer
    return events


async def test_every_event_comes_at_least_an_interval_after_the_previous_one():
    events = await read_paced(changes=40, pause_s=INTERVAL_S / 10)
    gaps = [later[0] - earlier[0] for earlier, later in pairwise(events)]
    assert gaps and min(gaps) >= INTERVAL_S, gaps  # no tolerance: nothing between the send and the stamp
    assert len(events) < 20  # coalesced: 41 changes in about 0.2 s
    texts = [text for _, text, _ in events]
    assert texts[0] == "1" and texts[-1] == "42" and [final for *_, final in events] == [False] * (len(events) - 1) + [True]


async def test_changes_slower_than_the_interval_are_each_sent():
    events = await read_paced(changes=3, pause_s=INTERVAL_S * 3)
    assert [(text, final) for _, text, final in events] == [("1", False), ("2", False), ("3", False), ("4", False),
                                                             ("5", True)]
