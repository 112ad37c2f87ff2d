"""The API process's garbage-collection policy (api.gcpolicy): long-lived objects are frozen, so
no collection traverses them, and garbage frozen inside a reference cycle is still reclaimed
once the frozen heap has grown by the policy's share."""

from __future__ import annotations

import asyncio
import gc
import weakref

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


def test_objects_that_survived_into_the_old_generation_are_frozen_and_no_collection_traverses_them():
    freezer = HeapFreezer(freeze_at=10_000)
    freezer.collect_all()  # as at start
    kept = survivors(30_000)
    freezer.step()
    assert freezer.freezes == 1 and freezer.full_collections == 1
    assert gc.get_freeze_count() >= len(kept)
    assert len(gc.get_objects(generation=2)) < 10_000  # what a full collection still traverses
    freezer.step()  # nothing new survived: nothing to freeze, no growth to collect
    assert freezer.freezes == 1 and freezer.full_collections == 1


def test_a_cycle_that_became_garbage_after_being_frozen_is_collected_once_the_frozen_heap_grew_by_the_share():
    freezer = HeapFreezer(freeze_at=1_000, regrow=0.1)
    freezer.collect_all()  # the base: this process's heap as it is
    base = gc.get_freeze_count()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    batch = survivors(2_000)
    freezer.step()  # freezes the cycle with the batch
    assert freezer.freezes == 1 and freezer.full_collections == 1
    del a, b
    gc.collect()
    assert gone() is not None  # frozen: no collection reaches it
    more = survivors(int(base * 0.1))  # the frozen heap grows by the share...
    freezer.step()
    assert freezer.full_collections == 1 and gone() is not None  # ...once frozen
    freezer.step()  # and then the whole heap is collected
    assert freezer.full_collections == 2
    assert gone() is None
    assert gc.get_freeze_count() >= len(batch) + len(more)  # the survivors are frozen again


async def test_the_task_freezes_the_heap_at_start_then_what_survives_and_unfreezes_when_closed():
    freezer = HeapFreezer(interval_s=0.01, freeze_at=10_000)
    await freezer.start()
    try:
        assert freezer.full_collections == 1 and gc.get_freeze_count() > 0
        kept = survivors(20_000)
        async with asyncio.timeout(5):
            while not freezer.freezes:
                await asyncio.sleep(0.01)
        assert gc.get_freeze_count() >= len(kept)
    finally:
        await freezer.close()
    assert gc.get_freeze_count() == 0
