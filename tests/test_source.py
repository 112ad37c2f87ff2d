"""projector.source.Stream.poll through the real pymongo driver against the stand-in."""

from __future__ import annotations

from projector.source import Source, connect
from standin import StandIn

DB = "app"


def open_stream(mongo: StandIn, batch_size: int = 1000, max_await_ms: int = 100):
    client = connect(mongo.url)
    source = Source(client, DB, "generationOutputs", "userEconomy", batch_size=batch_size, max_await_ms=max_await_ms)
    return client, source.open()


def test_poll_applies_a_burst_once_the_driver_holds_no_more_events_without_an_idle_getmore(standin):
    """The getMore that brought the events is the last one: none waits out maxAwaitTimeMS after them."""
    client, stream = open_stream(standin, max_await_ms=5000)  # an idle getMore would show as a 5 s poll
    try:
        for i in range(3):
            standin.insert(DB, "userEconomy", {"_id": i, "masterAccountId": f"u{i}", "usdCredit": "1"})
        before = standin.command_count("getMore")
        events, caught_up = stream.poll(1000, 30.0)
        assert [e["documentKey"]["_id"] for e in events] == [0, 1, 2]
        assert caught_up
        assert standin.command_count("getMore") - before == 1
    finally:
        stream.close()
        client.close()


def test_poll_reads_on_while_batches_are_cut_by_their_size(standin):
    """A full batch means the server holds more: one poll takes them all, then stops at the drained batch."""
    client, stream = open_stream(standin, batch_size=2, max_await_ms=5000)
    try:
        for i in range(5):
            standin.insert(DB, "userEconomy", {"_id": i, "masterAccountId": f"u{i}", "usdCredit": "1"})
        before = standin.command_count("getMore")
        events, caught_up = stream.poll(1000, 30.0)
        assert [e["documentKey"]["_id"] for e in events] == [0, 1, 2, 3, 4]
        assert caught_up
        assert standin.command_count("getMore") - before == 3  # 2 + 2 + 1
    finally:
        stream.close()
        client.close()


def test_poll_stops_at_max_events_and_says_it_is_not_caught_up(standin):
    client, stream = open_stream(standin)
    try:
        for i in range(5):
            standin.insert(DB, "userEconomy", {"_id": i, "masterAccountId": f"u{i}", "usdCredit": "1"})
        events, caught_up = stream.poll(2, 30.0)
        assert len(events) == 2 and not caught_up
        events, caught_up = stream.poll(1000, 30.0)
        assert [e["documentKey"]["_id"] for e in events] == [2, 3, 4] and caught_up
    finally:
        stream.close()
        client.close()


def test_an_idle_poll_returns_nothing_caught_up_and_the_token_advances(standin):
    client, stream = open_stream(standin, max_await_ms=50)
    try:
        standin.insert(DB, "userEconomy", {"_id": 1, "masterAccountId": "u1", "usdCredit": "1"})
        events, _ = stream.poll(1000, 30.0)
        token = stream.token
        assert len(events) == 1
        assert stream.poll(1000, 30.0) == ([], True)
        assert stream.token["_data"] >= token["_data"]
    finally:
        stream.close()
        client.close()
