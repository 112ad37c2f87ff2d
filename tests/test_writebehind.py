"""WriteBehind: jobs run in order on one thread; after a failure nothing queued behind it runs,
and the failure reaches the submitting thread."""

from __future__ import annotations

import threading

import pytest

from devkit.waits import wait_for
from projector.writebehind import WriteBehind


def test_jobs_run_in_order_on_another_thread():
    writes = WriteBehind(depth=2)
    ran: list[tuple[int, str]] = []
    for n in range(50):
        writes.submit(lambda n=n: ran.append((n, threading.current_thread().name)))
    writes.flush()
    assert [n for n, _ in ran] == list(range(50))
    assert {name for _, name in ran} == {"projector-writer"}
    assert writes.close() is None


def test_a_failed_job_drops_every_job_behind_it_and_is_raised_once():
    writes = WriteBehind(depth=4)
    gate = threading.Event()
    ran: list[str] = []

    def fail():
        gate.wait()
        raise ConnectionError("redis went away")

    writes.submit(lambda: ran.append("before"))
    writes.submit(fail)
    writes.submit(lambda: ran.append("checkpoint after the failed batch"))  # must never run
    gate.set()
    with pytest.raises(ConnectionError, match="went away"):
        writes.flush()
    assert ran == ["before"]
    writes.flush()  # raised once: the next round starts clean
    writes.submit(lambda: ran.append("after reopening"))
    writes.flush()
    assert ran == ["before", "after reopening"]
    writes.close()


def test_a_failure_is_raised_at_the_next_submit_and_settle_hands_it_back():
    writes = WriteBehind()
    writes.submit(lambda: 1 / 0)
    wait_for(lambda: not writes.busy, what="the failing job to run")
    with pytest.raises(ZeroDivisionError):
        writes.submit(lambda: None)
    writes.submit(lambda: 1 / 0)
    assert isinstance(writes.settle(), ZeroDivisionError)
    assert writes.settle() is None
    writes.close()


def test_submit_blocks_when_depth_jobs_are_waiting():
    writes = WriteBehind(depth=1)
    gate = threading.Event()
    writes.submit(gate.wait)  # running
    writes.submit(lambda: None)  # waiting: the queue is full now
    third = threading.Thread(target=writes.submit, args=(lambda: None,))
    third.start()
    third.join(0.2)
    assert third.is_alive() and writes.busy
    gate.set()
    third.join(5)
    assert not third.is_alive()
    writes.close()
    assert not writes.busy
