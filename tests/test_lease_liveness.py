"""A standby on a Redis Cluster keeps being able to take the lease (commit 58fe83e): a replica lost
for good no longer blocks every acquisition, and a raise of the fence copies longer than the lease's
TTL no longer makes every acquisition expire."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from devkit.rediscluster import LocalCluster
from devkit.waits import wait_for
from projector.lease import Lease
from readmodel import Layout
from readmodel.fences import SLOTS

from .conftest import delete_prefix, store_client


@pytest.fixture
def cluster_redis(redis_cluster, prefix):
    """A client of the session's cluster; this test's keys deleted afterwards."""
    client = store_client(redis_cluster.env)
    yield client
    delete_prefix(client, prefix)
    client.close()


def test_a_raise_over_several_masters_longer_than_the_ttl_still_ends_in_leading(cluster_redis, layout):
    """Each master's raise takes 40 % of the TTL (the lease key's time to live is shortened by as
    much: no clock involved): three masters outlast the TTL, and the lease renewed after each one
    keeps it. The real time a raise takes comes on top: the TTL leaves it 60 % (6 s) of slack, as
    a loaded CI machine needs (with 1 s of slack a raise under load once outlasted it)."""
    lease = Lease(cluster_redis, layout, holder="slow", ttl_ms=10_000)
    raise_each_master = lease.fences.replicated
    calls = []

    def slow(client, build, want, timeout_ms):
        replies = raise_each_master(client, build, want, timeout_ms)
        calls.append(client)
        if len(calls) == 1:
            return replies  # the acquisition itself; the masters' raises follow
        left = cluster_redis.pttl(layout.leader) - 4000
        if left > 0:
            cluster_redis.pexpire(layout.leader, left)
        else:
            cluster_redis.delete(layout.leader)  # the TTL ran out during this master's raise
        return replies

    lease.fences.replicated = slow
    assert lease.acquire()
    assert len(calls) == 1 + 3  # the acquisition, then each master's copies
    assert Lease.current(cluster_redis, layout) == ("slow", lease.token)


def test_a_slot_map_missing_a_slot_is_read_again_before_the_next_acquisition(cluster_redis, layout):
    """A map read while a failover left a slot unserved: the raise refuses to leave that slot's copy
    unraised (an error, not leading) and has the map read again, so the next attempt leads."""
    lease_slot = key_slot(layout.leader.encode())
    del cluster_redis.nodes_manager.slots_cache[(lease_slot + 1) % SLOTS]
    lease = Lease(cluster_redis, layout, holder="standby")
    with pytest.raises(RedisClusterException, match="covers 16383 of 16384"):
        lease.acquire()
    assert lease.acquire()
    assert Lease.current(cluster_redis, layout) == ("standby", lease.token)


@pytest.fixture
def own_cluster():
    """A cluster of this test's own: it loses a replica for good."""
    with LocalCluster() as local:
        yield local


def _flags(port: int, node_id: str) -> list[str]:
    with redis.Redis(port=port, decode_responses=True) as node:
        for line in node.execute_command("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if fields[0] == node_id:
                return fields[2].split(",")
    return []


def test_a_standby_takes_the_lease_once_the_replica_its_slot_map_promised_is_gone_for_good(own_cluster):
    """The lease's master loses its only replica (kill -9, never restarted). The client's slot map
    still lists it, so the first acquisition waits for an acknowledgement that cannot come (a short
    WAIT is no error: nothing else would make redis-py read the map again); the map is read again
    then, and the next acquisition leads without that replica."""
    layout = Layout("liveness")
    client = store_client(own_cluster.env)
    try:
        slot = key_slot(layout.leader.encode())

        def map_lists_a_replica() -> bool:
            client.nodes_manager.initialize()  # a new cluster's gossip may not have told every node yet
            return len(client.nodes_manager.slots_cache[slot]) == 2

        wait_for(map_lists_a_replica, 30, "the slot map listing the lease master's replica")
        primary, replica = client.nodes_manager.slots_cache[slot]
        own_cluster.kill9(replica.port)
        with redis.Redis(port=primary.port, decode_responses=True) as node:
            lost = next(line.split()[0] for line in node.execute_command("CLUSTER", "NODES").splitlines()
                        if f":{replica.port}@" in line.split()[1])
        wait_for(lambda: all("fail" in _flags(p, lost) for p in own_cluster.running_ports()), 30,
                 "every node seeing the killed replica as failed")

        lease = Lease(client, layout, holder="standby", ttl_ms=3000)
        attempts = [lease.acquire() for _ in range(3)]
        assert attempts[0] is False  # the map still promised the lost replica
        assert True in attempts, "the slot map was never read again: every acquisition waits for the lost replica"
        assert Lease.current(client, layout) == ("standby", lease.token)
    finally:
        client.close()
