"""The leader lease: one holder at a time, a new fencing token per acquisition, local expiry."""

import pytest

from projector.lease import Lease


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def lease(redis, layout, name, clock, ttl_ms=5000):
    return Lease(redis, layout, holder=name, ttl_ms=ttl_ms, monotonic=clock)


def test_only_one_of_two_processes_gets_the_lease(any_redis, layout, clock):
    a, b = lease(any_redis, layout, "a", clock), lease(any_redis, layout, "b", clock)
    assert a.acquire() is True
    assert b.acquire() is False
    assert a.held() and not b.held()
    assert Lease.current(any_redis, layout) == ("a", a.token)


def test_each_acquisition_gets_a_higher_fencing_token(any_redis, layout, clock):
    a, b = lease(any_redis, layout, "a", clock), lease(any_redis, layout, "b", clock)
    a.acquire()
    first = a.token
    a.release()
    assert b.acquire() and b.token == first + 1




def test_renewal_fails_once_another_process_took_the_lease(real_redis, layout, clock):
    a, b = lease(real_redis, layout, "a", clock, ttl_ms=5000), lease(real_redis, layout, "b", clock)
    a.acquire()
    real_redis.delete(layout.leader)  # as if the TTL ran out while a was paused
    assert b.acquire()
    assert a.renew() is False
    assert not a.held() and a.token is None


def test_lease_counts_as_lost_locally_after_a_pause_longer_than_the_ttl(any_redis, layout, clock):
    a = lease(any_redis, layout, "a", clock, ttl_ms=5000)
    a.acquire()
    clock.now += 3.9
    assert a.held()
    clock.now += 0.2  # 80 % of the TTL has passed without a renewal
    assert not a.held()


def test_lease_expires_in_redis_when_not_renewed(real_redis, layout, clock):
    a = lease(real_redis, layout, "a", clock, ttl_ms=5000)
    a.acquire()
    assert 0 < real_redis.pttl(layout.leader) <= 5000


def test_release_lets_the_standby_take_over_at_once(any_redis, layout, clock):
    a, b = lease(any_redis, layout, "a", clock), lease(any_redis, layout, "b", clock)
    a.acquire()
    a.release()
    assert b.acquire()


def test_release_by_a_former_holder_does_not_drop_the_new_holders_lease(any_redis, layout, clock):
    a, b = lease(any_redis, layout, "a", clock), lease(any_redis, layout, "b", clock)
    a.acquire()
    stale_token = a.token
    any_redis.delete(layout.leader)
    b.acquire()
    a.token = stale_token
    a.release()
    assert Lease.current(any_redis, layout) == ("b", b.token)


def test_the_lease_and_the_checkpoint_survive_a_redis_that_forgot_every_script(fake_redis, layout, clock):
    """A restarted node or a promoted replica has an empty script cache: the one loader
    (readmodel.scripts) loads the scripts again and runs the call once more."""
    from projector.checkpoint import CheckpointStore

    a = lease(fake_redis, layout, "a", clock)
    assert a.acquire()
    fake_redis.script_flush()
    assert a.renew()
    fake_redis.script_flush()
    assert CheckpointStore(fake_redis, layout).save(None, "1.2", a.token, 5, "masters")
    fake_redis.script_flush()
    a.release()
    assert Lease.current(fake_redis, layout) is None
    assert CheckpointStore(fake_redis, layout).load().position == "1.2"
