"""Redis writes in order on a thread of their own, behind the loop that reads and normalizes.

While batch N's scripts run in Redis (redis-py waits on the socket without the GIL), the capture
loop already reads and normalizes batch N+1. Jobs run one at a time in the order submitted, so a
checkpoint submitted after a batch is written only once that batch is in Redis. After a job
fails, every job queued behind it is dropped, never run: a later checkpoint must not be stored
past writes that did not happen. The failure is raised in the submitting thread, at its next
:meth:`WriteBehind.submit` or :meth:`WriteBehind.flush`, once nothing is in flight.

Who owns what: the writer thread runs the jobs and appends what each returned (when not None) to
``_done``; the submitting thread takes those results with :meth:`WriteBehind.collect`. The two
``deque`` operations are atomic, and a result is never changed after it was returned. ``_error``
is written by the writer thread and read by the submitter only after ``queue.join()`` (the
queue's own lock orders them). The job queue is the only other thing they share.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

Job = Callable[[], Any]


class WriteBehind:
    """One writer thread with at most ``depth`` jobs waiting (the reader blocks beyond that)."""

    def __init__(self, depth: int = 2, name: str = "projector-writer") -> None:
        self.depth = depth
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=depth)
        self._name = name
        self._error: BaseException | None = None
        self._done: deque[Any] = deque()
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> None:
        """Queue ``job`` behind the ones in flight; raises a failure of an earlier job first."""
        self.check()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait until every job submitted so far ran (or was dropped); raise the failure, if any."""
        self._jobs.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def collect(self) -> list[Any]:
        """What the jobs that ran since the last call returned (None results left out), in order."""
        done = []
        while self._done:
            done.append(self._done.popleft())
        return done

    def check(self) -> None:
        """Raise a failure already recorded (waiting only for the jobs it makes drop)."""
        if self._error is not None:
            self.flush()

    def settle(self) -> BaseException | None:
        """Like :meth:`flush`, but return the failure instead of raising it (when the caller is
        already giving up on the stream and reopens from the stored checkpoint anyway)."""
        try:
            self.flush()
        except BaseException as exc:
            return exc
        return None

    @property
    def busy(self) -> bool:
        return self._jobs.unfinished_tasks > 0

    def close(self) -> BaseException | None:
        """Finish what is queued and stop the thread; returns a failure nobody has seen."""
        error = self.settle()
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        return error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    result = job()
                    if result is not None:
                        self._done.append(result)
            except BaseException as exc:
                self._error = exc
            finally:
                self._jobs.task_done()
