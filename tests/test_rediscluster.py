"""The loopback cluster the tests start (devkit/rediscluster.py) survives a port taken between
choosing it and redis-server binding it, and leaves no process behind when it cannot start."""

from __future__ import annotations

import socket

import pytest
import redis

import devkit.rediscluster as rediscluster
from devkit.rediscluster import LocalCluster


@pytest.fixture
def steal_second_port(monkeypatch):
    """The second port chosen is bound and listened on by someone else before the node starts."""
    choose = rediscluster.free_cluster_port
    chosen: list[int] = []
    held: list[socket.socket] = []

    def racing() -> int:
        port = choose()
        chosen.append(port)
        if len(chosen) == 2:
            thief = socket.socket()
            thief.bind(("127.0.0.1", port))
            thief.listen()
            held.append(thief)
        return port

    monkeypatch.setattr(rediscluster, "free_cluster_port", racing)
    yield chosen
    for sock in held:
        sock.close()


def test_a_node_whose_port_was_taken_starts_again_elsewhere(steal_second_port):
    with LocalCluster() as cluster:
        assert steal_second_port[1] not in cluster.ports
        assert len(set(cluster.ports)) == 6 and len(cluster.running_ports()) == 6
        with cluster.client() as client:
            client.set("k", "v")
            assert client.get("k") == b"v"
        # Every replica has synced once, or a master killed now would never be replaced.
        links = [redis.Redis(port=port).info("replication") for port in cluster.ports]
        assert sorted(info["role"] for info in links) == ["master"] * 3 + ["slave"] * 3
        assert all(info["master_link_status"] == "up" for info in links if info["role"] == "slave")


def test_a_cluster_that_cannot_start_stops_every_node_it_started(monkeypatch):
    cluster = LocalCluster()
    monkeypatch.setattr(cluster, "wait_ok", lambda timeout_s: (_ for _ in ()).throw(RuntimeError("no quorum")))
    with pytest.raises(RuntimeError, match="no quorum"):
        cluster.start()
    assert cluster.procs and all(proc.poll() is not None for proc in cluster.procs.values())
    assert not cluster.directory.exists()
