"""readmodel.scripts.run/arun with errors among a pipeline's replies: a cluster pipeline told not
to raise (the first attempt, which looks for NOSCRIPT) returns a lost node's ConnectionError as a
reply. It must reach the caller as the error it is (the API answers 503, the projector backs
off), never as a reply to decode (a 500 seen in the cluster failover test), and the client's slot
map is read again at once."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from readmodel import scripts


class Manager:
    def __init__(self) -> None:
        self.initialized = 0

    def initialize(self) -> None:
        self.initialized += 1


class AsyncManager(Manager):
    async def initialize(self) -> None:  # type: ignore[override]
        self.initialized += 1


class Pipeline:
    def __init__(self, replies: list) -> None:
        self.replies = replies

    def execute(self, raise_on_error: bool = True) -> list:
        return self.replies


class AsyncPipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list:  # type: ignore[override]
        return self.replies


class Cluster:
    """What run() uses of a cluster client: pipeline() and the slot map's manager."""

    def __init__(self, replies: list, asynchronous: bool = False) -> None:
        self.replies, self.asynchronous = replies, asynchronous
        self.nodes_manager = AsyncManager() if asynchronous else Manager()

    def pipeline(self, transaction: bool = False) -> Pipeline:
        return (AsyncPipeline if self.asynchronous else Pipeline)(self.replies)


def queue_nothing(pipe) -> None:
    pass


@pytest.mark.parametrize("error", [RedisConnectionError("Error 111 connecting"), ResponseError("WRONGTYPE")])
def test_an_error_among_the_replies_is_raised_not_returned(error):
    client = Cluster([[b"user", b"tasks", []], error])
    with pytest.raises(type(error)):
        scripts.run(client, queue_nothing)
    assert client.nodes_manager.initialized == (1 if isinstance(error, RedisConnectionError) else 0)


@pytest.mark.parametrize("error", [RedisConnectionError("Error 111 connecting"), ResponseError("WRONGTYPE")])
async def test_an_error_among_the_replies_is_raised_not_returned_asyncio(error):
    client = Cluster([error, [b"user", b"tasks", []]], asynchronous=True)
    with pytest.raises(type(error)):
        await scripts.arun(client, queue_nothing)
    assert client.nodes_manager.initialized == (1 if isinstance(error, RedisConnectionError) else 0)


def test_replies_without_errors_are_returned_as_they_are():
    assert scripts.run(Cluster([[1], [2]]), queue_nothing) == [[1], [2]]


def test_noscript_is_not_raised_but_loads_the_scripts_and_runs_again(monkeypatch):
    client = Cluster([])
    loaded: list[str] = []
    monkeypatch.setattr(client, "script_load", loaded.append, raising=False)
    attempts = iter([[NoScriptError("NOSCRIPT"), [1]], [[7], [2]]])
    monkeypatch.setattr(client, "pipeline", lambda transaction=False: Pipeline(next(attempts)))
    assert scripts.run(client, queue_nothing) == [[7], [1]]  # the first run's reply kept where it ran
    assert len(loaded) == len(scripts.ALL)
