"""The API process's garbage-collection policy (api.gcpolicy): long-lived objects are frozen, so
no collection traverses them, and garbage frozen inside a reference cycle is still reclaimed
once the frozen heap has grown by the policy's share, or once more streams have closed than the
share of those open."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from types import SimpleNamespace

import pytest

from api.gcpolicy import HeapFreezer


class Node:
    """A tracked object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen():
    """Each test starts and ends with nothing frozen (this process's collector is shared)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def survivors(count: int) -> list[list[int]]:
    """``count`` tracked objects promoted into the old generation."""
    objects = [[i] for i in range(count)]
    gc.collect()
    return objects


def test_what_survives_an_interval_is_frozen_and_no_collection_traverses_it():
    freezer = HeapFreezer()
    freezer.collect_all()  # as at start
    kept = survivors(30_000)
    freezer.step(now=0.0)  # not yet time to check the growth
    assert freezer.freezes == 1 and freezer.full_collections == 1
    assert gc.get_freeze_count() >= len(kept)
    assert len(gc.get_objects(generation=2)) < 1_000  # what a full collection still traverses


def test_a_cycle_that_became_garbage_after_being_frozen_is_collected_once_the_heap_grew_by_the_share():
    freezer = HeapFreezer(check_s=10, regrow=0.1)
    freezer.collect_all()  # the base: this process's heap as it is
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    freezer.step(now=0.0)  # freezes the cycle
    del a, b
    gc.collect()
    assert gone() is not None  # frozen: no collection reaches it
    freezer.step(now=10.0)  # checked: the heap has not grown by the share
    assert freezer.full_collections == 1 and gone() is not None
    more = survivors(sys.getallocatedblocks() // 10)  # two memory blocks each: more than the share
    freezer.step(now=15.0)  # not checked yet
    assert freezer.full_collections == 1 and gone() is not None
    freezer.step(now=20.0)  # checked: the whole heap is collected
    assert freezer.full_collections == 2
    assert gone() is None
    assert gc.get_freeze_count() >= len(more)  # the survivors are frozen again


def test_garbage_of_closed_streams_is_collected_once_more_closed_than_the_share_of_those_open_whatever_the_peak():
    """The peak collapse: streams held at a peak close; their frozen garbage keeps the memory
    blocks allocated, so the block count never grows by the share again. The closed-stream count
    triggers the collection instead (here: 120 closed, none open; 50 closed is below min_closed)."""
    streams = SimpleNamespace(open=120, closed=0)
    freezer = HeapFreezer(check_s=10, regrow=0.5, streams=streams, min_closed=100)
    freezer.collect_all()  # the base, at the peak
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    freezer.step(now=0.0)  # freezes the cycle (a stream's parts, while it is open)
    del a, b
    streams.open, streams.closed = 70, 50
    freezer.step(now=10.0)  # checked: 50 closed, fewer than min_closed
    assert freezer.full_collections == 1 and gone() is not None
    streams.open, streams.closed = 0, 120
    freezer.step(now=20.0)  # checked: 120 closed >= max(100, 0.5 * 0 open)
    assert freezer.full_collections == 2 and gone() is None
    freezer.step(now=30.0)  # counted from the last collection: nothing closed since
    assert freezer.full_collections == 2


async def test_the_task_freezes_the_heap_at_start_then_what_survives_each_interval_and_unfreezes_when_closed():
    freezer = HeapFreezer(interval_s=0.01)
    await freezer.start()
    try:
        assert freezer.full_collections == 1 and gc.get_freeze_count() > 0
        kept = survivors(20_000)
        async with asyncio.timeout(5):
            while not freezer.freezes:
                await asyncio.sleep(0.01)
        assert len(gc.get_objects(generation=2)) < len(kept)  # frozen, out of the old generation
    finally:
        await freezer.close()
    assert gc.get_freeze_count() == 0
