"""Ops commands: status, check, deadletters, inspect, resync; and the Prometheus endpoint."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import urllib.request
from pathlib import Path

import pytest
from pymongo import MongoClient

from projector.cli import main
from projector.settings import Settings
from projector.worker import Worker
from readmodel import Layout
from readmodel.settings import StoreSettings

from .capture_helpers import DB, ECONOMY, TASKS, economy_doc, settle, task_doc

pytestmark = pytest.mark.both_backends  # Every ops command runs against a single Redis and a Redis Cluster.


@pytest.fixture(autouse=True)
def store_in_env(store_env, monkeypatch):
    """The commands read REDIS_URL and REDIS_CLUSTER from the environment, as in production."""
    for name, value in store_env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def seeded(standin):
    """The shared stand-in with a live task, a bad document and a balance."""
    standin.insert(DB, TASKS, task_doc("g1", "u1", progress=0.25))
    standin.insert(DB, TASKS, {"_id": "bad", "status": "processing"})
    standin.insert(DB, ECONOMY, economy_doc("e1", "u1", credit="2.5", exp=7))
    return standin


@pytest.fixture
def worker(seeded, real_redis, prefix, backend):
    mongo = MongoClient(seeded.url, serverSelectionTimeoutMS=3000)
    settings = Settings(store=StoreSettings(key_prefix=prefix, cluster=backend == "cluster"), mongo_url=seeded.url)
    worker = Worker(settings, real_redis, mongo, progress=False)
    yield worker
    worker.close()
    mongo.close()


def run(capsys, *args):
    code = main([*args])
    out = capsys.readouterr()
    return code, out.out, out.err


def common(prefix):
    return ["--key-prefix", prefix]


def test_check_fails_with_a_reason_when_no_worker_ever_ran(capsys, real_redis, prefix):
    code, _, err = run(capsys, "check", *common(prefix))
    assert code == 1 and err.strip() == "unhealthy: no projector has reported health yet"


def test_check_passes_while_the_worker_tails_and_fails_after_it_stopped(capsys, worker, prefix):
    settle(worker)
    worker.report()
    assert run(capsys, "check", *common(prefix))[0] == 0
    worker.close()
    code, _, err = run(capsys, "check", *common(prefix))
    assert code == 1 and "stopped" in err


def test_status_shows_leader_checkpoint_and_counters(capsys, worker, prefix):
    settle(worker)
    worker.report()
    code, out, _ = run(capsys, "status", "--json", *common(prefix))
    status = json.loads(out)
    assert code == 0
    assert status["leader"]["holder"] == worker.lease.holder
    assert status["health"]["state"] == "tailing" and status["health"]["resyncs"] == "1"
    assert status["checkpoint"]["position"] == worker.saved.position
    assert status["deadLetters"] == 1 and status["problem"] is None
    code, out, _ = run(capsys, "status", *common(prefix))
    rows = dict(line.split(None, 1) if not line.startswith(("last error", "dead letters")) else
                line.rsplit(None, 1) for line in out.splitlines())
    assert rows["state"].strip() == "tailing" and rows["health"].strip() == "ok"


def test_deadletters_lists_reason_and_document(capsys, worker, prefix):
    settle(worker)
    _, out, _ = run(capsys, "deadletters", "--json", "--limit", "5", *common(prefix))
    [entry] = json.loads(out)
    assert entry["collection"] == TASKS and entry["id"] == "bad" and "masterAccountId" in entry["reason"]
    _, out, _ = run(capsys, "deadletters", *common(prefix))
    assert "generationOutputs  bad  missing or invalid masterAccountId" in out


def test_inspect_shows_the_snapshot_and_the_raw_keys(capsys, worker, prefix):
    settle(worker)
    _, out, _ = run(capsys, "inspect", "u1", "--json", *common(prefix))
    report = json.loads(out)
    assert report["snapshot"]["balance"] == {"usdCredit": "2.5", "points": 6756, "exp": 7}
    assert report["keys"][Layout(prefix).tasks("u1")]["g1"]["progressPercent"] == 25.0
    _, out, _ = run(capsys, "inspect", "u1", *common(prefix))
    assert "usdCredit 2.5" in out and "25.0%" in out and Layout(prefix).seqs("u1") in out


def test_resync_without_a_leader_rebuilds_the_read_model_itself(capsys, seeded, real_redis, prefix):
    code, out, err = run(capsys, "resync", "--mongo-url", seeded.url, *common(prefix))
    assert code == 0 and out.startswith("resync done: position ")
    assert "doc/s" not in err and "\r" not in err  # no progress bar: stderr is not a terminal here
    assert real_redis.hget(Layout(prefix).user("u1"), "usdCredit") == b"2.5"
    assert real_redis.exists(Layout(prefix).leader) == 0


def test_resync_with_a_leader_asks_it_to_resync(capsys, worker, real_redis, prefix):
    settle(worker)
    code, out, _ = run(capsys, "resync", *common(prefix))
    assert code == 0 and "asked the leader" in out
    assert real_redis.exists(worker.layout.resync_request) == 1


def test_metrics_port_serves_prometheus_text(worker):
    worker.serve_metrics(0)  # any free port
    port = worker.metrics.port
    settle(worker)
    worker.report()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "livestatus_projector_resyncs_total 1.0" in text
    assert "livestatus_projector_dead_letters_total 1.0" in text
    assert 'livestatus_projector_leader{partition="0/1"} 1.0' in text
    worker.close()


def test_bad_setting_exits_with_one_sentence(capsys, prefix, monkeypatch):
    monkeypatch.setenv("STALE_AFTER_HOURS", "soon")
    code, _, err = run(capsys, "check", *common(prefix))
    assert code == 2 and err.strip() == "projector: STALE_AFTER_HOURS must be a number, got 'soon'"


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_the_resync_progress_bar_shows_only_on_a_terminal(seeded, prefix, store_env, terminal):
    """The real command: a bar (carriage-return redraws) when stderr is a terminal, none when it is
    a pipe or a file, as under docker logs or journald."""
    reader, writer = pty.openpty() if terminal else os.pipe()
    if terminal:  # a terminal of 24 x 100 (a new pty is 0 x 0, where tqdm draws an empty bar)
        fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {**os.environ, **store_env, "MONGO_URL": seeded.url, "KEY_PREFIX": prefix}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "projector"), "resync"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=writer)
    os.close(writer)
    err = b""
    while True:
        try:
            chunk = os.read(reader, 65536)
        except OSError:  # the terminal's other end closed (EIO)
            break
        if not chunk:
            break
        err += chunk
    os.close(reader)
    assert proc.wait(timeout=60) == 0, err
    assert (b"doc/s]" in err and b"\r" in err) is terminal, err
