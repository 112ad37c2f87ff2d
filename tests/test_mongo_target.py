"""The MONGO_TEST_URL switch (tests/mongo_target.py), tested by pointing it at a stand-in process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pymongo import MongoClient

from standin import DuplicateKey

from .mongo_target import ENV, MARKER, ReplicaSet, mongo_target

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def process_url():
    """A `python -m standin` process: to the tests, a replica set at a URL."""
    proc = subprocess.Popen([sys.executable, "-m", "standin", "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        yield re.search(r"mongodb://\S+", line).group(0)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_without_the_variable_the_tests_get_an_in_process_stand_in(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with mongo_target() as mongo:
        assert type(mongo).__name__ == "StandIn"


def test_with_the_variable_the_helpers_write_and_read_that_replica_set(monkeypatch, process_url):
    monkeypatch.setenv(ENV, process_url)
    with mongo_target() as mongo:
        assert isinstance(mongo, ReplicaSet) and mongo.url == process_url
        mongo.insert("app", "generationOutputs", {"_id": "g1", "status": "pending"})
        assert mongo.update("app", "generationOutputs", "g1", set={"status": "running"}, inc={"n": 2})
        assert not mongo.update("app", "generationOutputs", "missing", set={"status": "x"})
        assert mongo.replace("app", "userEconomy", "e1", {"usdCredit": "1"}, upsert=False) is False
        mongo.insert("app", "userEconomy", {"_id": "e1", "usdCredit": "1"})
        assert mongo.documents("app", "generationOutputs") == [{"_id": "g1", "status": "running", "n": 2}]
        assert mongo.count("app", "userEconomy") == 1 and mongo.delete("app", "userEconomy", "e1")
        assert mongo.cluster_time().time > 0
        with pytest.raises(DuplicateKey):  # what StandIn.insert raises, so tests catch one type
            mongo.insert("app", "generationOutputs", {"_id": "g1"})
    with MongoClient(process_url) as client:  # written through the URL, not into some stand-in of its own
        assert client.app.generationOutputs.find_one({"_id": "g1"})["status"] == "running"


def test_each_test_starts_from_empty_collections(monkeypatch, process_url):
    monkeypatch.setenv(ENV, process_url)
    with mongo_target() as mongo:
        mongo.insert("app", "generationOutputs", {"_id": "left-over"})
    with mongo_target() as mongo:
        assert mongo.documents("app", "generationOutputs") == []


@pytest.mark.parametrize("fault", ["truncate_history", "invalidate", "fail_next", "hangup_next", "command_count"])
def test_a_fault_only_the_stand_in_can_inject_skips_the_test_saying_why(monkeypatch, process_url, fault):
    monkeypatch.setenv(ENV, process_url)
    with mongo_target() as mongo, pytest.raises(pytest.skip.Exception, match="needs the stand-in"):
        getattr(mongo, fault)("getMore")


def test_a_database_holding_data_tests_did_not_write_is_refused(monkeypatch, process_url):
    with MongoClient(process_url) as client:
        client.app.users.insert_one({"_id": "someone"})
    monkeypatch.setenv(ENV, process_url)
    with pytest.raises(pytest.exit.Exception, match="tests did not write"):
        with mongo_target():
            pass
    with MongoClient(process_url) as client:
        assert client.app.users.count_documents({}) == 1
        assert MARKER not in client.app.list_collection_names()


@pytest.mark.timeout(300)
def test_capture_tests_run_against_the_url_and_skip_stand_in_faults(process_url):
    selection = "initial_sync_builds or lost_history_resyncs_automatically or sigterm_finishes"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", selection,
         "tests/test_worker_capture.py", "tests/test_worker_process.py"],
        cwd=ROOT, env=dict(os.environ, **{ENV: process_url}), capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    # The capture tests run on a single Redis and on a Redis Cluster: two of each.
    assert re.search(r"\b3 passed, 2 skipped\b", result.stdout), result.stdout[-3000:]
    assert "needs the stand-in: losing the oplog history on demand" in result.stdout
    with MongoClient(process_url) as client:  # the capture tests wrote there
        assert MARKER in client.app.list_collection_names()
        assert client.app.generationOutputs.count_documents({}) > 0


@pytest.mark.timeout(120)
def test_the_server_conformance_tests_run_unchanged_against_the_url(process_url):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:anyio",
         "tests/test_server_conformance.py", "tests/test_server_conformance_writes.py"],
        cwd=ROOT, env=dict(os.environ, **{ENV: process_url}), capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    # Only the test of the stand-in's own periodic no-op skips: a server's interval is not a test's.
    assert re.search(r"\b28 passed, 1 skipped\b", result.stdout), result.stdout[-3000:]
    assert "periodic no-op interval of a running server" in result.stdout
