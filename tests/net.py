"""Loopback ports for the servers tests start."""

from __future__ import annotations

import os
import socket

# What `make test-clock` sets to move the clock (libfaketime and tests/faketime/sitecustomize.py).
CLOCK_VARIABLES = ("LD_PRELOAD", "FAKETIME", "DONT_FAKE_MONOTONIC", "PYTHONPATH")


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; a tiny race is possible, no more)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clock_env() -> dict[str, str]:
    """The variables that move this process's clock, for a child started with a minimal env."""
    return {name: os.environ[name] for name in CLOCK_VARIABLES if name in os.environ}


def real_clock_env() -> dict[str, str]:
    """This process's env without them: for a server that is not ours (redis-server keeps its clock)."""
    return {name: value for name, value in os.environ.items() if name not in CLOCK_VARIABLES}
