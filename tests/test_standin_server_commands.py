"""What the stand-in answers to the commands a driver's test harness sends: fail points, renames,
the admin commands, and a clear refusal of the features it does not keep."""

from __future__ import annotations

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, OperationFailure
from pymongo.read_concern import ReadConcern

from .test_standin import mongo, next_change  # noqa: F401  (a fixture and a helper shared with the stand-in tests)

DB = "app"


@pytest.fixture
def client(mongo):
    client = MongoClient(mongo.url, serverSelectionTimeoutMS=5000, appname="tests")
    yield client
    client.close()


def fail_point(client, name="failCommand", mode=None, **data):
    client.admin.command({"configureFailPoint": name, "mode": mode or {"times": 1}, "data": data})


def test_the_harness_handshake_reports_a_replica_set_with_test_commands(client):
    assert client.admin.command("getCmdLineOpts")["parsed"]["replication"]["replSet"] == "rs0"
    assert client.admin.command("getParameter", "*")["enableTestCommands"] is True
    assert client.admin.command("serverStatus")["process"] == "mongod"
    assert client.admin.command("killAllSessions", [])["ok"] == 1


def test_fail_command_fails_the_listed_command_the_given_number_of_times(mongo, client):
    fail_point(client, mode={"times": 2}, failCommands=["insert"], errorCode=8)
    for _ in range(2):
        with pytest.raises(OperationFailure) as failure:
            client[DB].command("insert", "t", documents=[{}])
        assert failure.value.code == 8
    client[DB].command("insert", "t", documents=[{"_id": 1}])
    assert mongo.count(DB, "t") == 1


def test_fail_command_labels_only_what_it_is_told_so_a_stream_does_not_resume(mongo, client):
    with client[DB].t.watch(max_await_time_ms=100) as stream:
        fail_point(client, failCommands=["getMore"], errorCode=6)
        with pytest.raises(OperationFailure) as failure:
            stream.try_next()
    assert failure.value.code == 6 and not failure.value.has_error_label("ResumableChangeStreamError")
    assert len(mongo.change_stream_opens) == 1


def test_fail_command_with_the_resumable_label_is_resumed(mongo, client):
    with client[DB].t.watch(max_await_time_ms=100) as stream:
        fail_point(client, failCommands=["getMore"], errorCode=6, errorLabels=["ResumableChangeStreamError"])
        mongo.insert(DB, "t", {"_id": 1})
        assert next_change(stream)["documentKey"] == {"_id": 1}
    assert len(mongo.change_stream_opens) == 2


def test_fail_get_more_after_checkout_is_labelled_by_the_server_and_resumed(mongo, client):
    with client[DB].t.watch(max_await_time_ms=100) as stream:
        fail_point(client, "failGetMoreAfterCursorCheckout", errorCode=189)
        mongo.insert(DB, "t", {"_id": 1})
        assert next_change(stream)["documentKey"] == {"_id": 1}
    assert len(mongo.change_stream_opens) == 2


def test_fail_get_more_after_checkout_spares_a_get_more_of_an_unknown_cursor(mongo, client):
    fail_point(client, "failGetMoreAfterCursorCheckout", errorCode=189)
    with pytest.raises(OperationFailure) as failure:
        client[DB].command("getMore", 12345, collection="t")
    assert failure.value.code == 43  # no cursor to check out: the fail point stays armed
    with client[DB].t.watch(max_await_time_ms=100) as stream:
        mongo.insert(DB, "t", {"_id": 1})
        assert next_change(stream)["documentKey"] == {"_id": 1}
    assert len(mongo.change_stream_opens) == 2  # it fired on the stream's getMore


def test_fail_command_can_close_the_connection_and_be_limited_to_one_app_name(mongo, client):
    fail_point(client, mode="alwaysOn", failCommands=["find"], closeConnection=True, appName="someone-else")
    assert client[DB].t.find_one() is None  # another application's fail point
    fail_point(client, mode={"times": 2}, failCommands=["find"], closeConnection=True, appName="tests")
    with pytest.raises(AutoReconnect):
        client[DB].t.find_one()  # the read and its one retry both find the connection closed
    assert client[DB].t.find_one() is None


def test_mode_off_disarms_an_always_on_fail_point(client):
    fail_point(client, mode="alwaysOn", failCommands=["ping"], errorCode=2)
    with pytest.raises(OperationFailure):
        client.admin.command("ping")
    fail_point(client, mode="off")
    assert client.admin.command("ping")["ok"] == 1


@pytest.mark.parametrize("bad", [{"configureFailPoint": "stopReplProducer", "mode": "alwaysOn"},
                                 {"configureFailPoint": "failCommand", "mode": {"times": 1}, "data": {}},
                                 {"configureFailPoint": "failCommand", "mode": "sometimes",
                                  "data": {"failCommands": ["ping"]}},
                                 {"configureFailPoint": "failCommand", "mode": "alwaysOn",
                                  "data": {"failCommands": ["insert"], "writeConcernError": {"code": 91}}}])
def test_a_fail_point_the_stand_in_cannot_honour_is_refused(client, bad):
    with pytest.raises(OperationFailure) as failure:
        client.admin.command(bad)
    assert failure.value.code == 2


def test_rename_sends_a_rename_event_with_to_then_invalidates_the_collection_stream(mongo, client):
    mongo.insert(DB, "a", {"_id": 1})
    with client[DB].a.watch(max_await_time_ms=100) as stream:
        client[DB].a.rename("b")
        rename = next_change(stream)
        invalidate = next_change(stream)
    assert rename["operationType"] == "rename"
    assert rename["ns"] == {"db": DB, "coll": "a"} and rename["to"] == {"db": DB, "coll": "b"}
    assert invalidate["operationType"] == "invalidate"
    assert mongo.documents(DB, "b") == [{"_id": 1}] and mongo.documents(DB, "a") == []


def test_rename_onto_an_existing_collection_needs_drop_target(mongo, client):
    mongo.insert(DB, "a", {"_id": 1})
    mongo.insert(DB, "b", {"_id": 2})
    with pytest.raises(OperationFailure) as failure:
        client[DB].a.rename("b")
    assert failure.value.code == 48
    client[DB].a.rename("b", dropTarget=True)
    assert mongo.documents(DB, "b") == [{"_id": 1}]


def test_a_database_stream_sees_the_rename_and_keeps_going(mongo, client):
    mongo.insert(DB, "a", {"_id": 1})
    with client[DB].watch(max_await_time_ms=100) as stream:
        client[DB].a.rename("b")
        mongo.insert(DB, "b", {"_id": 2})
        assert next_change(stream)["operationType"] == "rename"
        assert next_change(stream)["documentKey"] == {"_id": 2}


def test_change_streams_need_majority_read_concern(client):
    with pytest.raises(OperationFailure):
        client[DB].get_collection("t", read_concern=ReadConcern("local")).watch()
    client[DB].get_collection("t", read_concern=ReadConcern("majority")).watch().close()


@pytest.mark.parametrize("options", [{"full_document": "whenAvailable"}, {"full_document": "required"},
                                     {"full_document_before_change": "whenAvailable"},
                                     {"show_expanded_events": True}])
def test_features_the_stand_in_does_not_keep_are_refused_by_name(client, options):
    with pytest.raises(OperationFailure) as failure:
        client[DB].t.watch(**options)
    assert "stand-in" in str(failure.value)


@pytest.mark.parametrize("update", [{"$push": {"a": 1}}, {"$currentDate": {"a": True}}, [{"$set": {"a": 1}}]])
def test_update_operators_the_stand_in_does_not_keep_are_refused(mongo, client, update):
    mongo.insert(DB, "t", {"_id": 1})
    with pytest.raises(OperationFailure):
        client[DB].t.update_one({"_id": 1}, update)
    assert mongo.get(DB, "t", 1) == {"_id": 1}


def test_a_transaction_whose_document_changed_meanwhile_fails_its_commit_as_a_transient_write_conflict(mongo, client):
    """Not the server's way (it fails the conflicting write or makes the other writer wait), but
    the same outcome for a driver: a TransientTransactionError, nothing of the transaction applied."""
    client[DB].t.insert_one({"_id": 1, "n": 0})
    with client.start_session() as session:
        session.start_transaction()
        client[DB].t.update_one({"_id": 1}, {"$set": {"n": 1}}, session=session)
        client[DB].t.insert_one({"_id": 2}, session=session)
        client[DB].t.update_one({"_id": 1}, {"$set": {"n": 99}})  # outside the transaction
        with pytest.raises(OperationFailure) as failure:
            session.commit_transaction()
    assert failure.value.code == 112 and failure.value.has_error_label("TransientTransactionError")
    assert mongo.documents(DB, "t") == [{"_id": 1, "n": 99}]


def test_with_transaction_retries_a_conflicting_transaction_until_it_commits(mongo, client):
    client[DB].t.insert_one({"_id": 1, "n": 0})
    attempts = []

    def body(session):
        attempts.append(1)
        client[DB].t.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
        if len(attempts) == 1:
            client[DB].t.update_one({"_id": 1}, {"$inc": {"n": 10}})  # conflicts with the first try

    with client.start_session() as session:
        session.with_transaction(body)
    assert len(attempts) == 2 and mongo.get(DB, "t", 1)["n"] == 11


def test_a_change_stream_cannot_open_in_a_transaction_and_an_aborted_one_leaves_nothing(mongo, client):
    with client.start_session() as session:
        session.start_transaction()
        client[DB].t.insert_one({"_id": 1}, session=session)
        with pytest.raises(OperationFailure) as failure:
            client[DB].t.watch(session=session)
        assert failure.value.code == 263  # OperationNotSupportedInTransaction
        session.abort_transaction()
    assert mongo.documents(DB, "t") == []
