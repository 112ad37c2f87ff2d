"""Loopback ports for the servers tests, benchmarks and the demo start, and the clock variables a
child process inherits (or must not: a server that is not ours keeps the real clock)."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

# What `make test-clock` sets to move the clock (libfaketime and tests/faketime/sitecustomize.py).
CLOCK_VARIABLES = ("LD_PRELOAD", "FAKETIME", "DONT_FAKE_MONOTONIC", "PYTHONPATH")


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; a tiny race is possible, no more)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_below_ephemeral_range() -> int:
    """A free port a process can still bind after it has made outgoing connections (the projector
    serving metrics after connecting to MongoDB and Redis): one taken from the
    ephemeral range (free_port) can be handed to one of its own outgoing connections first."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(10_000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def free_cluster_port() -> int:
    """A free port whose Redis Cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on ``port`` right now."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def clock_env() -> dict[str, str]:
    """The variables that move this process's clock, for a child started with a minimal env."""
    return {name: os.environ[name] for name in CLOCK_VARIABLES if name in os.environ}


def real_clock_env() -> dict[str, str]:
    """This process's env without them: for a server that is not ours (redis-server keeps its clock)."""
    return {name: value for name, value in os.environ.items() if name not in CLOCK_VARIABLES}
