"""Schemathesis against the app's own OpenAPI, in-process: no request shape produces a 500,
and every response matches the documented status codes, content types and schemas."""

from __future__ import annotations

import re
import time
import uuid

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from api.main import create_app
from api.settings import Settings
from readmodel import Layout
from readmodel.settings import StoreSettings
from tests.apiserver import KEY, SECRET
from tests.conftest import REDIS_URL

PREFIX = f"t{uuid.uuid4().hex[:10]}"
app = create_app(
    # Long-polls and fresh-after-write reads wait at most this long here (their timeouts are tested elsewhere).
    Settings(store=StoreSettings(REDIS_URL, PREFIX), api_keys=(KEY,), auth_secret=SECRET, heartbeat_s=0.05,
             long_poll_max_s=0.05, fresh_wait_s=0.05)
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


# The stream again, its headers fuzzed over all of latin-1 (what an HTTP header can carry), in
# valid and invalid shapes: a Last-Event-ID such as "²" must be a 400, never a 500.
stream_schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex=r"/status/stream$")
stream_schema.config.max_stream_events = 1  # a resume at the current version sends only `sync`
stream_schema.config.generation.update(codec="latin-1", max_examples=60)


@stream_schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_stream_headers_never_break_the_stream(case):
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {KEY}"}
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance])


# Random latin-1 rarely spells a number: draw Last-Event-ID values that look like one too
# (superscripts and fractions pass str.isdigit(), which int() refuses).
_LATIN1 = st.characters(max_codepoint=0xFF, exclude_categories=["Cc"])
_DIGITISH = st.characters(max_codepoint=0xFF, categories=["Nd", "No"]) | st.sampled_from("0123456789 +-_")
LAST_EVENT_IDS = (st.text(_DIGITISH, min_size=1, max_size=21) | st.text(_LATIN1, min_size=1, max_size=40)).filter(
    lambda value: not value[0].isspace()  # a header value cannot start with whitespace
)


@given(case=stream_schema["/users/{masterAccountId}/status/stream"]["GET"].as_strategy(), last_event_id=LAST_EVENT_IDS)
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_last_event_id_headers_are_a_400_or_a_stream_never_a_500(case, last_event_id):
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {KEY}", "Last-Event-ID": last_event_id}
    response = case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance])
    if response.status_code == 200:
        assert re.fullmatch(r"[ \t]*[0-9]{1,19}[ \t]*", last_event_id)


def test_the_stream_documents_its_last_event_id_header_so_it_is_fuzzed():
    (operation,) = [result.ok() for result in stream_schema.get_all_operations()]
    headers = [p["name"] for p in operation.definition.raw["parameters"] if p["in"] == "header"]
    assert headers == ["Last-Event-ID"]
