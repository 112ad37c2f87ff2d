"""REST endpoints in-process (ASGI transport + lifespan) against the real Redis: shapes and errors."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import replace

import httpx
import pytest
from asgi_lifespan import LifespanManager

from api.auth import mint_token
from api.main import create_app
from api.settings import Settings
from readmodel import Layout, Partition, ReadModel
from readmodel.settings import StoreSettings
from tests.apiserver import KEY, SECRET, apply, auth, balance_change, gone_change, task_change
from tests.conftest import REDIS_URL

USER = "x402:0x1821ab"


pytestmark = pytest.mark.both_backends  # Every real-Redis test here runs on a single Redis and on a Redis Cluster.


@pytest.fixture
def settings(prefix: str, store_env: dict[str, str]) -> Settings:
    return Settings(store=StoreSettings(store_env["REDIS_URL"], prefix, cluster=store_env["REDIS_CLUSTER"] == "1"),
                    api_keys=(KEY,), auth_secret=SECRET, text_task_limit=3)


@pytest.fixture
async def client(settings: Settings, real_redis):
    app = create_app(settings)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            yield c


@pytest.fixture
def readmodel(real_redis, layout) -> ReadModel:
    return ReadModel(real_redis, layout)


async def test_status_serves_the_snapshot_with_exact_usd_and_every_task_field(client, readmodel):
    apply(readmodel, balance_change(USER, "1.250000", 3378, 42), task_change(USER, "gen-1", progress=47.0))
    response = await client.get(f"/users/{USER}/status", headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["masterAccountId"] == USER and body["version"] == 1
    assert body["balance"] == {"usdCredit": "1.250000", "points": 3378, "exp": 42}
    (task,) = body["liveTasks"]
    assert set(task) == {
        "generationId", "idHash", "status", "progressPercent", "progressSource", "toolId", "toolDisplayName",
        "costUsd", "startedAt", "updatedAt", "sourcePlatform", "expectedDurationMs", "progressMovedAt", "stalled",
        "stalledAt",
    }
    assert task["costUsd"] == "0.012469" and task["progressPercent"] == 47.0 and task["progressSource"] == "reported"


async def test_unknown_well_formed_user_gets_an_empty_snapshot_at_version_zero(client):
    body = (await client.get("/users/nobody.here_1-2:3/status", headers=auth())).json()
    assert body["version"] == 0 and body["liveTasks"] == [] and body["balance"]["usdCredit"] == "0"


async def test_estimated_progress_is_computed_at_read_time_from_start_and_typical_duration(client, readmodel):
    now = int(time.time() * 1000)
    apply(
        readmodel,
        task_change(USER, "half", progress=None, started_ms=now - 30_000, expected_ms=60_000),
        task_change(USER, "overdue", progress=None, started_ms=now - 600_000, expected_ms=60_000),
    )
    before = time.time() * 1000
    tasks = {t["generationId"]: t for t in (await client.get(f"/users/{USER}/status", headers=auth())).json()["liveTasks"]}
    after = time.time() * 1000
    assert tasks["half"]["progressSource"] == "estimate"
    # Elapsed over expected at the moment of the read, which falls between before and after
    # (±0.1: the percentage is rounded to one decimal).
    started = now - 30_000
    assert 100 * (before - started) / 60_000 - 0.1 <= tasks["half"]["progressPercent"] <= 100 * (after - started) / 60_000 + 0.1
    assert tasks["overdue"]["progressPercent"] == 95.0  # capped below done


async def test_status_report_keeps_the_legacy_bot_shape(client, readmodel):
    apply(readmodel, balance_change(USER, "2.5", 6756, 7), task_change(USER, "gen-1", progress=10.0, cost="0.5"))
    body = (await client.get(f"/users/{USER}/status-report", headers=auth())).json()
    assert body["points"] == 6756 and body["exp"] == 7 and body["walletAddress"] is None
    (task,) = body["liveTasks"]
    assert set(task) == {"idHash", "status", "costUsd", "progress", "sourcePlatform", "updatedAt", "startedAt", "toolId"}
    assert task["costUsd"] == 0.5 and task["progress"] == 10.0


async def test_status_text_for_telegram_is_html_escaped_with_bars_and_a_more_line(client, readmodel):
    apply(
        readmodel,
        balance_change(USER, "1.250000", 3378, 42),
        *[task_change(USER, f"gen-{i}", tool_name=f"<Tool & {i}>", progress=50.0) for i in range(5)],
    )
    body = (await client.get(f"/users/{USER}/status/text", params={"platform": "telegram"}, headers=auth())).json()
    assert body["parseMode"] == "HTML" and body["version"] == 1 and body["allowedMentions"] is None
    text = body["text"]
    assert "<b>Balance</b>: $1.25 · 3,378 points · 42 exp" in text
    assert "&lt;Tool &amp; 0&gt;" in text and "<Tool" not in text
    assert "▰▰▰▰▰▱▱▱▱▱" in text and text.endswith("…and 2 more tasks not shown")


async def test_status_text_for_discord_is_markdown_and_idle_users_get_a_friendly_line(client):
    body = (await client.get(f"/users/{USER}/status/text", params={"platform": "discord"}, headers=auth())).json()
    assert body["parseMode"] is None and body["allowedMentions"] == {"parse": []}
    assert body["text"].startswith("**Balance**") and "Nothing running right now" in body["text"]


async def test_a_task_that_ended_is_no_longer_served(client, readmodel):
    apply(readmodel, task_change(USER, "gen-1"))
    apply(readmodel, gone_change(USER, "gen-1"))
    body = (await client.get(f"/users/{USER}/status", headers=auth())).json()
    assert body["version"] == 2 and body["liveTasks"] == []


@pytest.mark.parametrize("bad_id", ["a b", "x" * 129, "ü", "a%0A", "semi;colon", "%00"])
async def test_a_malformed_user_id_is_a_400_json_error(client, bad_id):
    response = await client.get(f"/users/{bad_id}/status", headers=auth())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_user_id"


async def test_a_128_character_id_is_accepted(client):
    assert (await client.get(f"/users/{'a' * 128}/status", headers=auth())).status_code == 200


@pytest.mark.parametrize(
    "path, status, code",
    [("/nope", 404, "not_found"), ("/users/a/status/text?platform=myspace", 400, "invalid_request")],
)
async def test_unknown_routes_and_bad_parameters_answer_json_errors(client, path, status, code):
    response = await client.get(path, headers=auth())
    assert response.status_code == status and response.json()["error"]["code"] == code


async def test_a_wrong_method_is_a_405_json_error(client):
    response = await client.post(f"/users/{USER}/status", headers=auth())
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


async def test_redis_down_is_a_503_json_error(prefix):
    settings = Settings(store=StoreSettings("redis://127.0.0.1:1/0", prefix), api_keys=(KEY,), auth_secret=SECRET)
    app = create_app(settings)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            response = await c.get(f"/users/{USER}/status", headers=auth())
            ready = await c.get("/readyz")
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable"
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    message = ready.json()["error"]["message"]
    assert message.startswith("Redis does not answer") and "127.0.0.1:1" not in message and "Errno" not in message


async def test_readyz_needs_a_fresh_projector_heartbeat(client, real_redis, layout):
    assert (await client.get("/readyz")).json()["error"]["code"] == "not_ready"  # no heartbeat yet
    real_redis.hset(layout.health, "heartbeatMs", int(time.time() * 1000) - 60_000)
    stale = await client.get("/readyz")
    assert stale.status_code == 503 and "old" in stale.json()["error"]["message"]
    real_redis.hset(layout.health, "heartbeatMs", int(time.time() * 1000))
    fresh = await client.get("/readyz")
    assert fresh.status_code == 200 and fresh.json()["status"] == "ready"


async def test_readyz_with_a_partitioned_projector_needs_every_partitions_heartbeat(settings, real_redis, prefix):
    app = create_app(replace(settings, projector_partitions=2))
    now_ms = int(time.time() * 1000)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            real_redis.hset(Layout(prefix, Partition(0, 2)).health, "heartbeatMs", now_ms)
            one = await c.get("/readyz")
            real_redis.hset(Layout(prefix, Partition(1, 2)).health, "heartbeatMs", now_ms - 60_000)
            stale = await c.get("/readyz")
            real_redis.hset(Layout(prefix, Partition(1, 2)).health, "heartbeatMs", now_ms)
            both = await c.get("/readyz")
    assert one.status_code == 503 and "partition 1/2" in one.json()["error"]["message"]
    assert stale.status_code == 503 and "partition 1/2" in stale.json()["error"]["message"]
    assert both.status_code == 200 and both.json()["status"] == "ready"


async def test_healthz_answers_without_credentials(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_metrics_expose_stream_fanout_and_latency_series(client):
    await client.get(f"/users/{USER}/status", headers=auth())
    text = (await client.get("/metrics")).text
    for name in (
        "livestatus_api_open_streams",
        "livestatus_api_events_sent_total",
        "livestatus_api_stream_resumes_total",
        "livestatus_api_dropped_states_total",
        "livestatus_api_pubsub_reconnects_total",
    ):
        assert name in text
    assert 'livestatus_api_request_seconds_count{method="GET",route="/users/{masterAccountId}/status",status="200"} 1.0' in text


async def test_arbitrary_request_methods_do_not_grow_the_metrics(client):
    await client.request("M-first", f"/users/{USER}/status", headers=auth())  # the one "other" series
    await client.get("/metrics")
    size = len((await client.get("/metrics")).text.splitlines())
    for i in range(50):
        response = await client.request(f"M{i}", f"/users/{USER}/status", headers=auth())
        assert response.status_code == 405
    text = (await client.get("/metrics")).text
    assert len(text.splitlines()) == size
    line = 'livestatus_api_request_seconds_count{method="other",route="/users/{masterAccountId}/status",status="405"} 51.0'
    assert line in text
    assert 'method="M' not in text


async def test_openapi_docs_are_served(client):
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/users/{masterAccountId}/status/stream" in paths


async def test_cors_allows_only_configured_origins(prefix, real_redis):
    settings = Settings(store=StoreSettings(REDIS_URL, prefix), api_keys=(KEY,), auth_secret=SECRET,
                        cors_origins=("https://panel.example",))
    app = create_app(settings)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            good = await c.get("/healthz", headers={"Origin": "https://panel.example"})
            bad = await c.get("/healthz", headers={"Origin": "https://evil.example"})
    assert good.headers["access-control-allow-origin"] == "https://panel.example"
    assert "access-control-allow-origin" not in bad.headers


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


async def test_panel_csp_allows_only_its_own_inline_code_and_the_api_origin(client):
    response = await client.get("/panel")
    (script,) = re.findall(r"<script>(.*?)</script>", response.text, re.S)
    (style,) = re.findall(r"<style>(.*?)</style>", response.text, re.S)
    csp = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == _sha256(script) and csp["style-src"] == _sha256(style)  # no 'unsafe-inline'
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["x-frame-options"] == "DENY"


async def test_panel_embedding_is_a_setting(prefix, real_redis):
    settings = Settings(store=StoreSettings(REDIS_URL, prefix), api_keys=(KEY,), auth_secret=SECRET,
                        panel_frame_ancestors="https://app.example")
    app = create_app(settings)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            response = await c.get("/panel")
    assert "frame-ancestors https://app.example" in response.headers["content-security-policy"]
    assert "x-frame-options" not in response.headers


async def test_panel_page_is_served_self_contained(client):
    response = await client.get("/panel")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["referrer-policy"] == "no-referrer"
    html = response.text
    assert ("EventSource" in html and 'role="progressbar"' in html) or "progressbar" in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline


async def test_user_token_reads_own_status_via_query_parameter(client):
    token = mint_token(SECRET, USER, 60)
    assert (await client.get(f"/users/{USER}/status", params={"token": token})).status_code == 200
