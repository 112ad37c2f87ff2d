"""API settings: read from the environment once, malformed values refused with the variable's name."""

from __future__ import annotations

import pytest

from api.settings import Settings, SettingsError

SECRET = "s" * 32


def test_settings_come_from_the_environment():
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://r:6380/1", "KEY_PREFIX": "t1", "API_KEYS": "a, b,,c", "AUTH_SECRET": SECRET,
            "CORS_ORIGINS": "https://x.example,https://y.example", "SSE_HEARTBEAT_S": "0.5", "SSE_RETRY_MS": "1500",
            "READY_MAX_HEARTBEAT_AGE_S": "30", "API_HOST": "0.0.0.0", "API_PORT": "9000", "API_INSECURE_DEV": "0",
        }
    )
    assert settings.redis_url == "redis://r:6380/1" and settings.key_prefix == "t1"
    assert settings.api_keys == ("a", "b", "c") and settings.auth_secret == SECRET
    assert settings.cors_origins == ("https://x.example", "https://y.example")
    assert (settings.heartbeat_s, settings.retry_ms, settings.ready_max_heartbeat_age_s) == (0.5, 1500, 30.0)
    assert (settings.host, settings.port, settings.insecure_dev) == ("0.0.0.0", 9000, False)
    settings.check_secure()


def test_defaults_are_the_documented_ones():
    settings = Settings.from_env({})
    assert (settings.key_prefix, settings.heartbeat_s, settings.port, settings.ready_max_heartbeat_age_s) == ("ls", 15.0, 8000, 10.0)


@pytest.mark.parametrize(
    "name, value",
    [("API_PORT", "http"), ("API_PORT", "70000"), ("SSE_HEARTBEAT_S", "-1"), ("SSE_HEARTBEAT_S", "soon"),
     ("READY_MAX_HEARTBEAT_AGE_S", "inf"), ("AUTH_SECRET", "short"), ("ESTIMATE_CAP_PERCENT", "150"),
     ("TOKEN_LEEWAY_S", "-1"), ("TOKEN_MAX_LIFETIME_S", "0")],
)
def test_a_malformed_value_is_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_insecure_dev_flag_accepts_the_usual_spellings():
    assert Settings.from_env({"API_INSECURE_DEV": "yes"}).insecure_dev
    Settings.from_env({"API_INSECURE_DEV": "1"}).check_secure()


def test_token_settings_come_from_the_environment():
    settings = Settings.from_env(
        {"TOKEN_LEEWAY_S": "5", "TOKEN_MAX_LIFETIME_S": "3600", "TOKEN_AUDIENCE": "livestatus", "TOKEN_ISSUER": "bot"}
    )
    assert (settings.token_leeway_s, settings.token_max_lifetime_s) == (5.0, 3600.0)
    assert (settings.token_audience, settings.token_issuer) == ("livestatus", "bot")
    assert (Settings().token_audience, Settings().token_issuer) == (None, None)
