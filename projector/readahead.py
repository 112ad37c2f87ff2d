"""Reading a scan one batch ahead, on a thread of its own, while the caller works on the last one.

pymongo asks the server for a cursor's next batch only once the current one is used up, so a
plain loop waits for the server between batches, doing nothing. Here a reader thread fills the
next batches (the socket wait releases the GIL) while the caller's thread projects the current
one.

Who owns what: the reader thread owns the iterator it reads (it closes it when done); the batches
it hands over are never touched by it again. The bounded queue is the only thing the two share,
plus the ``stop`` event the caller sets when it leaves early.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


def read_ahead(open_items: Callable[[], Iterable[T]], size: int, depth: int = 2,
               name: str = "projector-scan") -> Iterator[list[T]]:
    """The items ``open_items()`` gives, in lists of ``size``, read by a thread up to ``depth`` lists
    ahead. A failure of the reading is raised here, after the lists read before it."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            items = open_items()
            try:
                batch: list[T] = []
                for item in items:
                    batch.append(item)
                    if len(batch) >= size:
                        if not put(batch):
                            return
                        batch = []
                if batch and not put(batch):
                    return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
            put(_END)
        except BaseException as exc:  # handed to the caller's thread, raised there
            put(exc)

    reader = threading.Thread(target=read, name=name, daemon=True)
    reader.start()
    try:
        while True:
            got = handoff.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        reader.join()
