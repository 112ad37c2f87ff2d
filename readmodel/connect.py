"""The one place a Redis client is made: a single Redis, or a Redis Cluster (``REDIS_CLUSTER=1``).

Everything else in livestatus takes the client it is given and runs the same commands on both:
one user's keys share a hash tag, every script touches one user, pipelines are not transactions,
scans and multi-key reads go through redis-py (which spreads them over the cluster's masters) and
change notifications are sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``, Redis 7).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.connection import HiredisRespSerializer
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from .settings import StoreSettings

# What a client raises when the store is unreachable or reconfiguring: a cluster client raises
# RedisClusterException (not a RedisError) e.g. while a failed master's slots are not covered yet.
StoreError = (RedisError, RedisClusterException)


_pack_command: Callable[[tuple[Any, ...]], bytes] | None = None
if HIREDIS_AVAILABLE:  # redis[hiredis] installs it
    from hiredis import pack_command as _pack_command


class _HiredisPacker(HiredisRespSerializer):
    """redis-py's command packing, without its per-argument Python for the commands this project
    sends (a one-word command name, arguments hiredis packs as given): ~0.3 µs less per argument,
    and a batch of changes sends ~9 arguments per change. Anything else goes through redis-py's
    own packing, which gives the same bytes (or raises the same error)."""

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]
        if type(first) is str and first.isalpha() and _pack_command is not None:
            try:
                return [_pack_command(args)]
            except TypeError:  # an argument hiredis does not take (redis-py's raises DataError)
                pass
        packed: list[bytes] = super().pack(*args)
        return packed


def _retry(retries: int) -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=retries)


def connect(store: StoreSettings, **options: Any) -> Any:
    """A sync client (the projector, the ops commands); ``options`` are redis-py client options.

    A cluster client follows ``MOVED`` and, after a master fails, refreshes its slot map and
    retries on the promoted replica (within its retry budget; callers retry beyond that).
    """
    if store.cluster:
        options.pop("health_check_interval", None)  # per-node connections have their own checks
        return RedisCluster.from_url(store.redis_url, retry=_retry(6), **options)
    if _pack_command is not None:  # a cluster client takes no command_packer
        options.setdefault("command_packer", _HiredisPacker())
    return redis.Redis.from_url(store.redis_url, **options)


def masters(client: Any) -> str:
    """Who holds the data now: the run ids of the masters (every master of a cluster), sorted.

    It changes whenever writes a master acknowledged may be gone: a failover promotes a replica
    (replication is asynchronous) and a restarted server is a new run. '' when the server does
    not tell (fakeredis)."""
    try:
        if isinstance(client, RedisCluster):
            infos = client.info("server", target_nodes=RedisCluster.PRIMARIES)
            runs = [info["run_id"] for info in infos.values()] if "run_id" not in infos else [infos["run_id"]]
        else:
            runs = [client.info("server")["run_id"]]
    except ResponseError:
        return ""
    return ",".join(sorted(runs))


def aconnect(store: StoreSettings, max_connections: int, **options: Any) -> Any:
    """An asyncio client (the API) holding at most ``max_connections`` connections (per node on a
    cluster). On a single Redis a request beyond that waits for a free connection."""
    options.setdefault("retry", _retry(2))
    if store.cluster:
        return AsyncRedisCluster.from_url(store.redis_url, max_connections=max_connections, **options)
    pool = aioredis.BlockingConnectionPool.from_url(store.redis_url, max_connections=max_connections, timeout=5,
                                                   **options)
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool


async def arefresh(client: Any) -> None:
    """Make sure ``client`` answers; a cluster client also reads the slot map again (after a
    failover it otherwise keeps sending sharded subscriptions to the failed master: redis-py only
    refreshes the map when a data command meets the failure, and subscriptions are not such)."""
    await client.ping()
    if isinstance(client, AsyncRedisCluster):
        await client.nodes_manager.initialize()


def apubsub_client(store: StoreSettings, name: str, **options: Any) -> Any:
    """The asyncio client whose pub/sub connections carry change notifications (named ``name`` in
    ``CLIENT LIST``): one connection on a single Redis, one per master holding a subscribed
    channel on a cluster."""
    options.setdefault("retry", _retry(2))
    if store.cluster:
        return AsyncRedisCluster.from_url(store.redis_url, client_name=name, **options)
    return aioredis.Redis.from_url(store.redis_url, client_name=name, health_check_interval=10, **options)
