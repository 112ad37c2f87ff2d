"""Loaded (through PYTHONPATH) only by `make test-clock`, which runs the suite under Debian's
libfaketime with the wall clock moved ahead and the monotonic clock left alone.

libfaketime 0.9.10 (Debian 12) then rejects the absolute monotonic deadline CPython 3.11's
``time.sleep`` passes to ``clock_nanosleep`` (EINVAL, measured here); with the monotonic clock
faked as well, lock and condition timeouts (``sem_clockwait``) would wait 40 days instead.
So ``time.sleep`` waits on a lock that is never released, which libfaketime does not touch.
"""

import os
import threading
import time

if os.environ.get("FAKETIME"):
    _never = threading.Event()

    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        _never.wait(seconds)

    time.sleep = _sleep
