"""Malformed and odd documents mixed with good ones: the real `projector run` never stops, every
rejected document is dead-lettered with a reason, every good one is projected."""

from __future__ import annotations

import random
import re
import signal

from devkit.waits import wait_for
from projector.deadletters import MAXLEN
from readmodel.health import read as read_health
from standin import DuplicateKey
from tests.capture_helpers import DB
from tests.procs import caught_up, output

from .conftest import size
from .fuzzdocs import Generator
from .helpers import compare

ROUND = 1_000  # documents per round; the dead letters of one round stay far below the stream's cap
MARKER = re.compile(r'"fz": "(F\d+)"')


def test_fuzzed_documents_never_stop_the_worker_and_every_rejection_is_dead_lettered(standin, spawn, real_redis, layout):
    total = size(2_000, 100_000)
    seed = random.randrange(1 << 30)
    print(f"SEED={seed} documents={total}")
    generator = Generator(seed)
    proc = spawn("--mongo-url", standin.url, "--batch-size", "500", "--no-progress")
    wait_for(lambda: caught_up(real_redis, layout, standin), 30, "the first sync")
    last_entry, written, bad_total, lettered_total, duplicates = "0-0", 0, 0, 0, 0
    while written < total:
        bad: dict[str, str] = {}  # marker -> field the reason must name
        good: set[str] = set()
        for _ in range(min(ROUND, total - written)):
            fuzzed = generator.next()
            written += 1
            try:
                standin.insert(DB, fuzzed.collection, fuzzed.doc)
            except DuplicateKey:  # a bad _id such as True can only be used once
                duplicates += 1
                continue
            (good.add(fuzzed.marker) if fuzzed.bad_field is None else bad.__setitem__(fuzzed.marker, fuzzed.bad_field))
        wait_for(lambda: caught_up(real_redis, layout, standin), 60, f"applying documents up to {written}")
        assert proc.poll() is None, output(proc)[-3000:]
        # Read this round's dead letters (the stream is capped at ~MAXLEN, so read them per round).
        entries = real_redis.xrange(layout.deadletters, min=f"({last_entry}")
        assert len(bad) < MAXLEN // 2
        letters: dict[str, str] = {}
        for entry_id, fields in entries:
            last_entry = entry_id.decode()
            match = MARKER.search(fields[b"document"].decode())
            assert match, fields
            letters[match.group(1)] = fields[b"reason"].decode()
        missing = sorted(set(bad) - set(letters))
        assert not missing, f"rejected but not dead-lettered: {missing[:20]}"
        assert not good & set(letters), f"good documents dead-lettered: {sorted(good & set(letters))[:20]}"
        unexplained = [(m, bad[m], letters[m]) for m in bad if bad[m] not in letters[m]]
        assert not unexplained, unexplained[:20]
        bad_total += len(bad)
        lettered_total += len(letters)
    # The worker's own counter agrees (its health report is published every second).
    wait_for(lambda: getattr(read_health(real_redis, layout), "dead_letters", None) == bad_total, 5, "the health report")
    health = read_health(real_redis, layout)
    assert health is not None
    diff = compare(standin, real_redis, layout)
    print(f"{written} documents ({bad_total} bad, {duplicates} duplicate ids skipped); dead letters {lettered_total}; "
          f"health errors={health.errors} deadLetters={health.dead_letters}; {diff}")
    assert lettered_total == bad_total
    assert health.errors == 0, health
    assert diff.clean, str(diff)  # every good document is projected, nothing else is
    assert "Traceback" not in output(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
