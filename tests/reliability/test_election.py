"""A MongoDB election under the running projector while writes go on (issue #23).

For ``ELECTION_S`` the stand-in refuses every change-stream ``getMore`` (the post-image lookups of
``updateLookup`` happen inside it), every ``aggregate`` (the reopen) and every ``find`` with
NotWritablePrimary (10107), as a primary that stepped down does, while documents keep changing
(the writes reach the store, as they would reach the new primary). Then the new primary serves.
The projector must lose nothing, need no resync (its resume token is still in the oplog: an
election loses no history), and be caught up again within seconds.

MongoDB labels a change stream's NotPrimary errors ResumableChangeStreamError
(jstests/noPassthrough/change_stream_error_label.js in mongodb/mongo), so the driver resumes a
getMore by itself; an aggregate refused on reopen reaches the projector, which retries from its
checkpoint with backoff (the change-streams specification: an error on aggregate is not resumable).
"""

from __future__ import annotations

import random
import signal
import time

from devkit.waits import wait_for
from tests.procs import caught_up, output
from tests.writers import MixedWriter

from .conftest import size
from .helpers import compare, resync_seconds

RUN = ("--batch-size", "200", "--lease-ttl-ms", "3000", "--no-progress")
NOT_WRITABLE_PRIMARY = 10107
ELECTION_S = 10.0
# "Lag back to normal within seconds": the next reopen (the backoff is at most 5 s) plus the backlog of
# the election's writes (about 500), on a machine that may be loaded.
CATCH_UP_S = 15.0


def test_an_election_of_ten_seconds_under_writes_loses_nothing_and_needs_no_resync(standin, spawn, real_redis, layout):
    elections = size(1, 5)
    seed = random.randrange(1 << 30)
    print(f"SEED={seed} elections={elections}")
    writer = MixedWriter(standin, seed, limit=1_000_000, pause_s=0.02)
    writer.seed()
    proc = spawn("--mongo-url", standin.url, *RUN)
    wait_for(lambda: caught_up(real_redis, layout, standin), 30, "the initial sync")
    writer.start()
    recoveries = []
    try:
        for n in range(elections):
            time.sleep(1.0)  # steady tailing before the step-down
            written, refused_before = writer.count, standin.command_count("getMore")
            for command in ("getMore", "aggregate", "find"):
                standin.fail_next(command, code=NOT_WRITABLE_PRIMARY, message="not primary", times=1_000_000)
            armed = standin.pending_faults()
            time.sleep(ELECTION_S)
            refused = armed - standin.pending_faults()
            standin.clear_faults()  # the new primary answers
            elected = time.monotonic()
            assert refused > 0, "the projector sent nothing the stand-in could refuse"
            assert writer.count > written, "writes stopped during the election"
            try:
                wait_for(lambda: caught_up(real_redis, layout, standin), 60, f"catching up after election {n}")
            except AssertionError:
                print(output(proc)[-5000:])
                raise
            recoveries.append(time.monotonic() - elected)
            print(f"election {n}: {refused} commands refused, {writer.count - written} writes meanwhile, "
                  f"{standin.command_count('getMore') - refused_before} getMores; caught up {recoveries[-1]:.1f} s after")
    finally:
        writer.stop.set()
        writer.join()
    wait_for(lambda: caught_up(real_redis, layout, standin), 60, "catching up after the last write")
    log = output(proc)
    diff = compare(standin, real_redis, layout)
    assert diff.clean, str(diff)
    assert len(resync_seconds(log)) == 1, log[-3000:]  # the initial one only: no election needed a resync
    assert "NotWritablePrimary" in log or "not primary" in log, log[-3000:]  # the refusals did reach it
    assert max(recoveries) < CATCH_UP_S, (recoveries, log[-4000:])
    assert "Traceback" not in log, log[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
