"""Health: the check turns the health hash into one verdict with a one-sentence reason."""

from projector.health import Stats, evaluate
from readmodel.health import Health

NOW = 1_795_000_000_000


def healthy(**changes):
    """A report as the hash holds it, with some fields changed (by their hash names)."""
    fields = Stats(holder="a", state="tailing", checkpoint_ms=NOW - 1500).health(NOW - 1000).fields()
    fields.update({k: str(v) for k, v in changes.items()})
    return Health.from_fields(fields)


def test_tailing_worker_with_fresh_heartbeat_is_healthy():
    assert evaluate(healthy(), NOW) is None


def test_missing_health_is_unhealthy():
    assert evaluate(None, NOW) == "no projector has reported health yet"


def test_old_heartbeat_is_unhealthy():
    assert "no heartbeat for 30 s" in evaluate(healthy(heartbeatMs=NOW - 30_000), NOW)


def test_high_lag_is_unhealthy():
    assert "lag is 120.0 s" in evaluate(healthy(lagMs=120_000), NOW)


def test_stopped_worker_is_unhealthy():
    assert "stopped" in evaluate(healthy(state="stopped"), NOW)


def test_stuck_checkpoint_is_unhealthy():
    assert "checkpoint" in evaluate(healthy(checkpointAgeMs=600_000), NOW)
