"""A scan read one batch ahead on a thread of its own gives every item, in order, in lists."""

import threading

import pytest

from projector.readahead import read_ahead


class Items:
    """An iterable that records whether it was closed and on which thread it was read."""

    def __init__(self, count, fail_at=None):
        self.count, self.fail_at = count, fail_at
        self.closed = threading.Event()
        self.threads = set()

    def __iter__(self):
        for n in range(self.count):
            self.threads.add(threading.current_thread().name)
            if n == self.fail_at:
                raise ValueError(f"cannot read item {n}")
            yield n

    def close(self):
        self.closed.set()


def test_every_item_comes_in_order_in_lists_read_by_another_thread():
    items = Items(25)
    assert list(read_ahead(lambda: items, 10)) == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    assert items.threads == {"projector-scan"} and items.closed.is_set()


def test_a_reading_failure_is_raised_to_the_caller_after_the_lists_read_before_it():
    items = Items(25, fail_at=13)
    got = []
    with pytest.raises(ValueError, match="item 13"):
        for batch in read_ahead(lambda: items, 5):
            got.append(batch)
    assert got == [list(range(5)), list(range(5, 10))]
    assert items.closed.is_set()


def test_a_caller_leaving_early_stops_the_reader_and_closes_the_items():
    items = Items(10_000)
    batches = read_ahead(lambda: items, 10, depth=1)
    assert next(batches) == list(range(10))
    batches.close()  # the caller stops (an exception in its loop does the same)
    assert items.closed.is_set()
    assert not any(t.name == "projector-scan" for t in threading.enumerate())


def test_nothing_to_read_gives_no_list():
    assert list(read_ahead(lambda: Items(0), 10)) == []
