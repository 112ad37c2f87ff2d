"""Projector settings come from the environment, validated once, with clear errors."""

import re
from decimal import Decimal

import pytest

from projector.settings import Settings, SettingsError
from readmodel.settings import StoreSettings


def test_defaults_match_the_platform():
    settings = Settings.from_env({})
    assert (settings.tasks_collection, settings.economy_collection) == ("generationOutputs", "userEconomy")
    assert settings.rules.points_rate == Decimal("0.00037")
    assert settings.rules.stale_after_ms == 24 * 3600 * 1000
    assert settings.deadletter_max == 10_000


def test_status_sets_are_read_normalized_and_terminal_wins():
    settings = Settings.from_env({"TERMINAL_STATUSES": "Done, Cancelled by user", "QUEUED_STATUSES": "queued,done"})
    assert settings.rules.terminal == {"done", "cancelled_by_user"}
    assert settings.rules.queued == {"queued"}


def test_success_statuses_are_configurable_like_terminal_ones_and_must_be_terminal():
    settings = Settings.from_env({"TERMINAL_STATUSES": "Done,failed", "SUCCESS_STATUSES": "Done"})
    assert settings.rules.succeeded == {"done"}
    assert Settings.from_env({"TERMINAL_STATUSES": "done,completed"}).rules.succeeded == {"completed"}
    with pytest.raises(SettingsError, match=r"SUCCESS_STATUSES must be terminal.*shipped"):
        Settings.from_env({"SUCCESS_STATUSES": "completed,shipped"})


def test_numbers_are_read():
    settings = Settings.from_env({"POINTS_RATE": "0.5", "STALE_AFTER_HOURS": "0.5", "DEADLETTER_MAX": "250",
                                  "BATCH_SIZE": "10", "METRICS_PORT": "9108"})
    assert (settings.rules.points_rate, settings.rules.stale_after_ms) == (Decimal("0.5"), 1_800_000)
    assert (settings.deadletter_max, settings.batch_size, settings.metrics_port) == (250, 10, 9108)


@pytest.mark.parametrize(("name", "value"), [("POINTS_RATE", "free"), ("POINTS_RATE", "0"),
                                             ("STALE_AFTER_HOURS", "-1"), ("DEADLETTER_MAX", "NaN"),
                                             ("METRICS_PORT", "http"), ("PARTITION", "2/2"),
                                             ("PARTITION", "half")])
def test_bad_values_are_refused_with_the_name(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_flags_override_the_environment():
    assert Settings.from_env({"MONGO_DB": "a"}, mongo_db="b").mongo_db == "b"
    assert Settings.from_env({"PARTITION": "0/2"}, partition="1/2").layout.checkpoint.endswith("{projector:1of2}:checkpoint")


def test_a_partition_has_its_own_projector_keys_and_the_whole_stream_is_the_default():
    assert str(Settings.from_env({}).partition) == "0/1"
    assert Settings.from_env({}).layout.checkpoint == "ls:{projector}:checkpoint"
    assert Settings.from_env({"PARTITION": "1/4"}).layout.leader == "ls:{projector:1of4}:leader"


def test_the_worker_caps_dead_letters_as_configured():
    import fakeredis
    from pymongo import MongoClient

    from projector.worker import Worker

    mongo = MongoClient("mongodb://127.0.0.1:1/?directConnection=true", connect=False)
    worker = Worker(Settings.from_env({"DEADLETTER_MAX": "7"}), fakeredis.FakeRedis(), mongo, progress=False)
    try:
        assert worker.writer.dead_letters.maxlen == 7
    finally:
        worker.close()
        mongo.close()


@pytest.mark.parametrize("prefix", ["", "a{b}", "has space", "x" * 33])
def test_the_projector_and_the_api_refuse_the_same_bad_key_prefix_with_the_same_sentence(prefix):
    from api.settings import Settings as ApiSettings

    with pytest.raises(SettingsError, match="KEY_PREFIX") as projector_error:
        Settings.from_env({"KEY_PREFIX": prefix})
    with pytest.raises(SettingsError, match="KEY_PREFIX") as api_error:
        ApiSettings.from_env({"KEY_PREFIX": prefix})
    assert str(projector_error.value) == str(api_error.value)


@pytest.mark.parametrize("raw", ["2.5", "10.01"])
def test_a_count_that_is_not_whole_is_refused_by_both_services_with_the_same_sentence(raw):
    from api.settings import Settings as ApiSettings

    with pytest.raises(SettingsError, match="must be a whole number") as projector_error:
        Settings.from_env({"BATCH_SIZE": raw})
    with pytest.raises(SettingsError, match="must be a whole number") as api_error:
        ApiSettings.from_env({"STREAMS_PER_USER": raw})
    assert str(projector_error.value).replace("BATCH_SIZE", "X") == str(api_error.value).replace("STREAMS_PER_USER", "X")


def test_the_projector_and_the_api_read_the_same_store_from_the_same_environment():
    from api.settings import Settings as ApiSettings

    env = {"KEY_PREFIX": "prod:ls", "REDIS_URL": "redis://10.0.0.5:6380/2"}
    projector, api = Settings.from_env(env), ApiSettings.from_env(env)
    assert projector.store == api.store == StoreSettings(env["REDIS_URL"], "prod:ls")


@pytest.mark.parametrize("raw, cluster", [(None, False), ("0", False), ("1", True), ("true", True), ("No", False)])
def test_redis_cluster_selects_the_cluster_client(raw, cluster):
    env = {} if raw is None else {"REDIS_CLUSTER": raw}
    assert Settings.from_env(env).store.cluster is cluster


@pytest.mark.parametrize("env, words", [
    ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER must be 1 or 0"),
    ({"REDIS_CLUSTER": "1", "REDIS_URL": "unix:///tmp/redis.sock"}, "not a unix socket"),
    ({"REDIS_CLUSTER": "1", "REDIS_URL": "redis://node1:7000/2"}, "database 0 only"),
])
def test_an_unusable_cluster_setting_is_refused_with_a_sentence(env, words):
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(env)


def test_a_secret_setting_can_come_from_a_file_without_its_trailing_newline(tmp_path):
    url = tmp_path / "mongo_url"
    url.write_text("mongodb://user:pw@db:27017/?replicaSet=rs0\n")
    assert Settings.from_env({"MONGO_URL_FILE": str(url)}).mongo_url == "mongodb://user:pw@db:27017/?replicaSet=rs0"


@pytest.mark.parametrize(("env", "message"), [
    ({"REDIS_URL": "redis://a:6379/0", "REDIS_URL_FILE": "/etc/hostname"}, "REDIS_URL and REDIS_URL_FILE are both set"),
    ({"MONGO_URL_FILE": "/nonexistent/mongo_url"}, "MONGO_URL_FILE: cannot read /nonexistent/mongo_url (No such file"),
])
def test_a_secret_file_that_conflicts_or_cannot_be_read_is_an_error(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_a_secret_file_error_never_shows_the_file(tmp_path):
    secret = tmp_path / "redis_url"
    secret.write_bytes(b"redis://:hunter2-\xff@redis:6379/0")  # not UTF-8: unreadable as text
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL_FILE": str(secret)})
    assert "hunter2" not in str(caught.value) and "REDIS_URL_FILE" in str(caught.value)
