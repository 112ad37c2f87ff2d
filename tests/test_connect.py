"""The one place a Redis client is made: a single Redis's commands are packed as redis-py packs them."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.connection import HiredisRespSerializer

from readmodel import connect as connecting


def packed(packer, args):
    try:
        return b"".join(packer.pack(*args))
    except Exception as exc:
        return type(exc)


ARGUMENT = st.one_of(st.text(), st.binary(), st.integers(), st.integers(min_value=2**64), st.floats(allow_nan=False),
                     st.binary().map(memoryview), st.binary().map(bytearray), st.booleans(), st.none())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["EVALSHA", "MGET", "HSET", "SCRIPT LOAD", "CLIENT SETINFO", "get", "EVAL\tSHA", "É", "ZADD2"]),
       st.lists(ARGUMENT, max_size=6))
def test_a_command_is_packed_into_the_bytes_redis_py_packs_or_refused_as_it_refuses_it(name, args):
    command = (name, *args)
    assert packed(connecting._HiredisPacker(), command) == packed(HiredisRespSerializer(), command)


def test_the_projectors_commands_skip_redis_pys_per_argument_packing(monkeypatch):
    if connecting._pack_command is None:
        pytest.skip("hiredis is not installed: redis-py packs every command")

    def refuse(*_args):
        raise AssertionError("redis-py's packing was called")

    monkeypatch.setattr(HiredisRespSerializer, "pack", refuse)
    assert connecting._HiredisPacker().pack("EVALSHA", "a" * 40, 1, "k", "caf\u00e9", 2.5) == [
        b"*6\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"a" * 40 + b"\r\n$1\r\n1\r\n$1\r\nk\r\n$5\r\ncaf\xc3\xa9\r\n$3\r\n2.5\r\n"]


def test_a_single_redis_client_packs_with_it_and_answers(real_redis, prefix):
    if connecting._pack_command is None or hasattr(real_redis, "nodes_manager"):
        pytest.skip("only a single Redis's client packs with it")
    assert isinstance(real_redis.connection_pool.connection_kwargs["command_packer"], connecting._HiredisPacker)
    real_redis.set(f"{prefix}:k", "caf\u00e9")
    assert real_redis.get(f"{prefix}:k") == "caf\u00e9".encode()
