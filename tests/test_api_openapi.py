"""The generated OpenAPI document is what clients generate code from: stable operation ids, only the
status codes the API sends (400, never 422), schemas for its errors and for every stream event,
and the API's real answers match those schemas."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from asgi_lifespan import LifespanManager
from jsonschema_rs import Draft202012Validator, ValidationError

from api.expiry import TOKEN_EXPIRED_FRAME
from api.main import create_app
from api.openapi import EVENTS, operation_id
from api.settings import Settings
from readmodel.settings import StoreSettings
from tests.apiserver import KEY, SECRET, SSE, Server, apply, auth, balance_change, task_change
from tests.conftest import REDIS_URL

OPERATIONS = {  # (method, path) -> the id generated clients name their function after
    ("get", "/users/{masterAccountId}/status"): "getStatus",
    ("get", "/users/{masterAccountId}/status-report"): "getStatusReport",
    ("get", "/users/{masterAccountId}/status/text"): "getStatusText",
    ("get", "/users/{masterAccountId}/status/stream"): "streamStatus",
    ("get", "/healthz"): "getHealthz",
    ("get", "/readyz"): "getReadyz",
    ("get", "/metrics"): "getMetrics",
    ("get", "/panel"): "getPanel",
}


@pytest.fixture(scope="module")
def document() -> dict:
    return create_app(Settings(api_keys=(KEY,), auth_secret=SECRET)).openapi()


def operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield (method, path), operation


def validator(document: dict, schema: dict) -> Draft202012Validator:
    """A validator for ``schema`` whose ``#/components/...`` references resolve in ``document``."""
    return Draft202012Validator({**schema, "components": document["components"]})


def response_schema(document: dict, path: str, status: str) -> dict:
    return document["paths"][path]["get"]["responses"][status]["content"]["application/json"]["schema"]


def test_every_operation_has_its_stable_readable_id(document):
    found = {key: operation["operationId"] for key, operation in operations(document)}
    for key, wanted in OPERATIONS.items():  # routes added later keep theirs; these never change
        assert found.pop(key) == wanted
    for key, generated in found.items():  # a new route without an explicit id: its function's name
        assert generated.isidentifier() and "_" not in generated, (key, generated)


def test_a_route_without_an_explicit_id_is_named_after_its_function_in_lower_camel_case():
    class Route:
        name = "status_text_for_chat"

    assert operation_id(Route()) == "statusTextForChat"


def test_no_operation_documents_a_422_and_validation_schemas_are_gone(document):
    for key, operation in operations(document):
        assert "422" not in operation["responses"], key
        if operation.get("parameters"):
            assert "400" in operation["responses"], key  # what a bad parameter gets instead
    assert "HTTPValidationError" not in document["components"]["schemas"]


async def test_a_bad_parameter_is_the_documented_400_not_a_422(document, prefix):
    app = create_app(Settings(store=StoreSettings(REDIS_URL, prefix), api_keys=(KEY,), auth_secret=SECRET))
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/users/u1/status/text", params={"platform": "myspace"}, headers=auth())
    assert response.status_code == 400
    validator(document, response_schema(document, "/users/{masterAccountId}/status/text", "400")).validate(response.json())


def test_every_documented_error_has_the_error_shape(document):
    for key, operation in operations(document):
        for status, response in operation["responses"].items():
            if status[0] in "45":
                assert response["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}, (
                    key, status)


def test_429_and_503_have_the_error_schema_and_a_retry_after_header(document):
    stream = document["paths"]["/users/{masterAccountId}/status/stream"]["get"]["responses"]
    for status in ("429", "503"):
        assert stream[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
        assert stream[status]["headers"]["Retry-After"]["schema"] == {"type": "integer"}


def test_the_stream_documents_a_schema_for_each_event(document):
    (content_type,) = document["paths"]["/users/{masterAccountId}/status/stream"]["get"]["responses"]["200"]["content"]
    items = document["paths"]["/users/{masterAccountId}/status/stream"]["get"]["responses"]["200"]["content"][
        content_type]["schema"]["oneOf"]
    assert content_type == "text/event-stream"
    documented = {item["properties"]["event"]["const"]: item["properties"]["data"]["contentSchema"]["$ref"] for item in items}
    assert documented == {"snapshot": "#/components/schemas/Snapshot", "sync": "#/components/schemas/SyncEvent",
                          "end": "#/components/schemas/EndEvent"}
    for ref in documented.values():
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"]
    assert set(EVENTS) == set(documented)


def event_data(document: dict, name: str) -> Draft202012Validator:
    return validator(document, {"$ref": f"#/components/schemas/{EVENTS[name][0]}"})


def test_the_events_a_real_stream_sends_match_their_schemas(document, server, readmodel):
    user = f"u:{uuid.uuid4().hex[:8]}"
    apply(readmodel, balance_change(user, "1.5", 4054, 3), task_change(user, "g1"))
    with httpx.stream("GET", f"{server.url}/users/{user}/status/stream", headers=auth(), timeout=5) as response:
        events = SSE(response)
        first, sync = events.next(), events.next()
        apply(readmodel, task_change(user, "g1", progress=90.0))
        later = events.next()
    assert [first.event, sync.event, later.event] == ["snapshot", "sync", "snapshot"]
    for event in (first, sync, later):
        event_data(document, event.event).validate(event.json())
    assert first.json()["liveTasks"] and later.json()["liveTasks"][0]["progressPercent"] == 90.0


def test_the_token_expired_event_matches_its_schema(document):
    lines = TOKEN_EXPIRED_FRAME.decode().splitlines()
    assert "event: end" in lines
    (data,) = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    event_data(document, "end").validate(json.loads(data))
    with pytest.raises(ValidationError):  # the schema is strict enough to refuse another reason
        event_data(document, "end").validate({"reason": "bored", "message": "x"})


def test_a_real_429_matches_the_documented_schema(document, module_prefix, store_env):
    server = Server(module_prefix, env={**store_env, "STREAMS_PER_USER": "1"}).start()
    user = f"u:{uuid.uuid4().hex[:8]}"
    try:
        url = f"{server.url}/users/{user}/status/stream"
        with (httpx.stream("GET", url, headers=auth(), timeout=5) as held,
              httpx.stream("GET", url, headers=auth(), timeout=5) as refused):
            assert held.status_code == 200
            refused.read()  # an error's body ends; a stream's would not
    finally:
        server.stop()
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    validator(document, response_schema(document, "/users/{masterAccountId}/status/stream", "429")).validate(refused.json())
