"""A stream's heartbeat interval varies, so streams opened together do not ping in one tick."""

from __future__ import annotations

from api.mailbox import Mailbox
from api.metrics import Metrics
from api.stream import HEARTBEAT_JITTER, PING, frames


class Quiet(Mailbox):
    """A mailbox nothing is ever offered to: each wait times out at once, its timeout recorded."""

    __slots__ = ("timeouts",)

    def __init__(self) -> None:
        super().__init__("u")
        self.timeouts: list[float] = []

    async def wait(self, timeout_s: float | None = None) -> bool:
        assert timeout_s is not None
        self.timeouts.append(timeout_s)
        return False


async def test_each_heartbeat_comes_within_the_interval_less_up_to_a_fifth_drawn_anew_each_time():
    mailbox = Quiet()
    body = frames(b"opening", mailbox, Metrics(), heartbeat_s=10.0)
    assert await anext(body) == b"opening"
    for _ in range(50):
        assert await anext(body) == PING
    await body.aclose()
    assert all(10.0 * (1 - HEARTBEAT_JITTER) <= t <= 10.0 for t in mailbox.timeouts)
    assert len(set(mailbox.timeouts)) > 40  # not one interval shared by every stream
    assert max(mailbox.timeouts) - min(mailbox.timeouts) > 10.0 * HEARTBEAT_JITTER / 2
