"""Schemathesis against the app's own OpenAPI, in-process: no request shape produces a 500,
and every response matches the documented status codes, content types and schemas."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from api.main import create_app
from api.settings import Settings
from readmodel import Layout
from tests.apiserver import KEY, SECRET
from tests.conftest import REDIS_URL

PREFIX = f"t{uuid.uuid4().hex[:10]}"
app = create_app(
    Settings(redis_url=REDIS_URL, key_prefix=PREFIX, api_keys=(KEY,), auth_secret=SECRET, heartbeat_s=0.05)
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.max_stream_events = 2  # the stream's opening snapshot and sync events, then hang up


@pytest.fixture(autouse=True)
def _fresh_projector_heartbeat():
    """/readyz answers 503 by design without one (tested in test_api_rest); here it must be 200."""
    client = redis.Redis.from_url(REDIS_URL)
    client.hset(Layout(PREFIX).health, "heartbeatMs", int(time.time() * 1000) + 600_000)
    client.close()


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{PREFIX}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.parametrize("credentials", ["service", "none"])
def test_no_request_shape_breaks_the_api(case, credentials):
    headers = {"Authorization": f"Bearer {KEY}"} if credentials == "service" else {}
    case.call_and_validate(
        headers=headers,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
