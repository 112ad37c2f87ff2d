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
        log = open(tmp_path / f"projector-{len(started)}.log", "w+")
        extra = ["--key-prefix", prefix] if "--key-prefix" not in args else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "projector", command, *extra, *args],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **store_env),
        )
        proc.log = log  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.log.close()


def output(proc) -> str:
    proc.log.flush()
    proc.log.seek(0)
    return proc.log.read()


def leader_pid(redis, layout) -> int | None:
    current = Lease.current(redis, layout)
    return int(current[0].split(":")[-2]) if current else None


def caught_up(redis, layout, standin) -> bool:
    checkpoint = CheckpointStore(redis, layout).load()
    latest = standin.cluster_time()
    return checkpoint is not None and checkpoint.position >= position(latest.time, latest.inc)
