"""The projector as a process in tests: the ``spawn`` fixture that starts `python -m projector`,
what a process printed, which one leads, and whether the read model caught up with the stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from projector.checkpoint import CheckpointStore
from projector.lease import Lease
from readmodel import position

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def spawn(prefix, tmp_path, store_env):
    """Start `python -m projector run ...`; every process still alive at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str, command: str = "run") -> subprocess.Popen:
        extra = ["--key-prefix", prefix] if "--key-prefix" not in args else []
        proc = logged([sys.executable, "-m", "projector", command, *extra, *args],
                      tmp_path / f"projector-{len(started)}.log", store_env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.log.close()


def logged(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``command`` started in the checkout with its stdout and stderr in ``log_path`` (``proc.log``).

    The log is opened for appending (O_APPEND): the child's writes land at its end whatever the
    file's offset, which the child shares with this process. A reader that seeked that file to 0
    while the child wrote (as output() once did, every 50 ms of a wait) had the child's line written
    over the start of the log: a "resync done" line was lost and a test waited for it in vain.
    """
    log = open(log_path, "a")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc) -> str:
    """The process's log so far, read through a handle of its own (never moving the child's offset)."""
    return Path(proc.log.name).read_text()


def leader_pid(redis, layout) -> int | None:
    current = Lease.current(redis, layout)
    return int(current[0].split(":")[-2]) if current else None


def caught_up(redis, layout, standin) -> bool:
    checkpoint = CheckpointStore(redis, layout).load()
    latest = standin.cluster_time()
    return checkpoint is not None and checkpoint.position >= position(latest.time, latest.inc)
