"""API settings: read from the environment once, malformed values refused with the variable's name."""

from __future__ import annotations

import pytest

from api.settings import InsecureConfig, Settings, SettingsError

SECRET = "s" * 32
A, B, C = ("a" * 32, "b" * 40, "c" * 64)


def test_settings_come_from_the_environment():
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://r:6380/1", "KEY_PREFIX": "t1", "API_KEYS": f"{A}, {B},,{C}", "AUTH_SECRET": SECRET,
            "CORS_ORIGINS": "https://x.example,https://y.example", "SSE_HEARTBEAT_S": "0.5", "SSE_RETRY_MS": "1500",
            "READY_MAX_HEARTBEAT_AGE_S": "30", "API_HOST": "0.0.0.0", "API_PORT": "9000", "API_INSECURE_DEV": "0",
        }
    )
    assert settings.store.redis_url == "redis://r:6380/1" and settings.store.key_prefix == "t1"
    assert settings.api_keys == (A, B, C) and settings.auth_secret == SECRET
    assert settings.cors_origins == ("https://x.example", "https://y.example")
    assert (settings.heartbeat_s, settings.retry_ms, settings.ready_max_heartbeat_age_s) == (0.5, 1500, 30.0)
    assert (settings.host, settings.port, settings.insecure_dev) == ("0.0.0.0", 9000, False)
    settings.check_secure()


def test_defaults_are_the_documented_ones():
    settings = Settings.from_env({})
    assert (settings.store.key_prefix, settings.heartbeat_s, settings.port, settings.ready_max_heartbeat_age_s) == \
        ("ls", 15.0, 8000, 10.0)


@pytest.mark.parametrize(
    "name, value",
    [("API_PORT", "http"), ("API_PORT", "70000"), ("SSE_HEARTBEAT_S", "-1"), ("SSE_HEARTBEAT_S", "soon"),
     ("READY_MAX_HEARTBEAT_AGE_S", "inf"), ("AUTH_SECRET", "short"), ("ESTIMATE_CAP_PERCENT", "150"),
     ("TOKEN_LEEWAY_S", "-1"), ("TOKEN_MAX_LIFETIME_S", "0"), ("PROJECTOR_PARTITIONS", "0"),
     ("PROJECTOR_PARTITIONS", "1.5"), ("PROJECTOR_PARTITIONS", "300")],
)
def test_a_malformed_value_is_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_readiness_checks_the_heartbeat_of_each_projector_partition():
    assert [layout.health for layout in Settings.from_env({}).projector_layouts] == ["ls:{projector}:health"]
    assert [layout.health for layout in Settings.from_env({"PROJECTOR_PARTITIONS": "2"}).projector_layouts] == [
        "ls:{projector:0of2}:health", "ls:{projector:1of2}:health"]


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


@pytest.mark.parametrize("keys, shorter", [("k" * 31, "1 of 1 is"), (f"{'k' * 32},short,{'x' * 5}", "2 of 3 are")])
def test_a_service_key_shorter_than_32_characters_is_refused_in_one_sentence(keys, shorter):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"API_KEYS": keys})
    message = str(refused.value)
    assert message.startswith("API_KEYS: every service key must be at least 32 characters") and shorter in message
    assert "short" not in message.replace("shorter", "") and "k" * 31 not in message  # the keys are not echoed
    assert "\n" not in message


def test_a_32_character_key_is_accepted():
    assert Settings.from_env({"API_KEYS": "k" * 32}).api_keys == ("k" * 32,)


@pytest.mark.parametrize("credentials", [{"API_KEYS": A}, {"AUTH_SECRET": SECRET}, {"API_KEYS": A, "AUTH_SECRET": SECRET}])
def test_insecure_dev_is_refused_when_credentials_are_set(credentials):
    settings = Settings.from_env({"API_INSECURE_DEV": "1", **credentials})
    with pytest.raises(InsecureConfig, match="--insecure-dev"):
        settings.check_secure()


def test_panel_frame_ancestors_is_a_setting_that_cannot_inject_directives():
    assert Settings().panel_frame_ancestors == "'none'"
    assert Settings.from_env({"PANEL_FRAME_ANCESTORS": "https://app.example"}).panel_frame_ancestors == "https://app.example"
    with pytest.raises(SettingsError, match="PANEL_FRAME_ANCESTORS"):
        Settings.from_env({"PANEL_FRAME_ANCESTORS": "'self'; script-src *"})


def test_the_insecure_dev_switch_is_read_like_every_other_yes_no_setting():
    assert Settings.from_env({"API_INSECURE_DEV": "On"}).insecure_dev
    assert not Settings.from_env({"API_INSECURE_DEV": "off"}).insecure_dev
    with pytest.raises(SettingsError, match="API_INSECURE_DEV"):
        Settings.from_env({"API_INSECURE_DEV": "maybe"})  # a typo on this switch is an error, not "off"
