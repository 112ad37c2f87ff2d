"""The delivery benchmark: its write-to-event matching, and one end-to-end run on tiny sizes."""

import math

from bench import delivery
from bench.common import PREFIXES_USED, redis_client
from bench.marks import Marks, latencies
from readmodel import Layout


def test_a_write_is_matched_to_the_first_event_carrying_its_mark_and_to_that_versions_publish():
    marks = Marks()
    first, second, lost = (marks.next("isolated") for _ in range(3))
    marks.stamp(first, "u1", 1_000_000)
    marks.stamp(second, "u1", 5_000_000)
    marks.stamp(lost, "u2", 6_000_000)  # superseded before delivery: no event carries it
    sse = [("u1", 1, 3_000_000, first), ("u1", 1, 4_000_000, first),  # a second stream of u1, later
           ("u1", 2, 9_000_000, second), ("u2", 7, 9_500_000, None)]
    pubsub = [("u1", 1, 2_000_000), ("u1", 2, 6_000_000), ("u1", 2, 8_000_000)]
    to_sse, to_pub, missing = latencies(marks, sse, pubsub, "isolated")
    assert to_sse == [2.0, 4.0]  # ms from each write to the first event with its mark
    assert to_pub == [1.0, 1.0]  # ms from each write to the first PUBLISH of the version it became
    assert missing == 1
    assert latencies(marks, sse, pubsub, "load") == ([], [], 0)


def test_the_delivery_benchmark_runs_end_to_end_and_leaves_no_keys_behind():
    rows = delivery.run(sizes=delivery.TINY)

    assert [row.name for row in rows][:3] == [f"write -> SSE client p{p}, isolated writes, 10 streams" for p in (50, 95, 99)]
    for row in rows:
        assert row.value is not None and math.isfinite(row.value) and row.value > 0, (row.name, row.note)
        assert row.baseline is not None and row.baseline > 0, (row.name, row.note)
    client = redis_client()
    for prefix in PREFIXES_USED:
        assert not list(client.scan_iter(match=Layout(prefix).all_keys_pattern(), count=1000)), prefix
    client.close()
