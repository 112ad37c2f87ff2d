"""The API's OpenAPI document, as generated clients need it.

- Operation ids are stable and readable: a route's ``operation_id``, else its function name in
  lowerCamelCase (``status_report`` -> ``statusReport``), never FastAPI's path-derived ones.
- Only the status codes the API sends: validation failures are answered 400 with the error shape
  (``errors.install_handlers``), so FastAPI's automatic 422 and its schemas are removed.
- The stream's events: each ``event:`` name with the JSON schema of its ``data`` (SyncEvent,
  EndEvent, and the Snapshot the REST route serves), in ``components`` for code generators.

The document is built once, on the first request for it, and cached by FastAPI on the app.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"


def operation_id(route: APIRoute) -> str:
    """The route's function name in lowerCamelCase (used when a route sets no operation_id)."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


class SyncEvent(BaseModel):
    """`event: sync`: the stream has sent what the client was missing and is now live."""

    version: int = Field(description="the snapshot version the client now has")
    resumedFrom: int | None = Field(description="the Last-Event-ID the stream was opened with, if any")
    sentSnapshot: bool = Field(description="whether an `event: snapshot` came before this one")


class EndEvent(BaseModel):
    """`event: end`: the last event of a stream opened with a user token whose `exp` has passed."""

    reason: Literal["token_expired"]
    message: str = Field(description="for people")


EVENTS: dict[str, tuple[str, str]] = {  # event name -> (schema in components, when it is sent)
    "snapshot": ("Snapshot", "the user's status; `id:` is its version. First (unless a resume is already current), "
                 "then one per new version; a slow client only ever gets the latest"),
    "sync": ("SyncEvent", "once, after the opening snapshot (or in its place): the client is caught up"),
    "end": ("EndEvent", "last, when the user token the stream was opened with expires"),
}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}


def stream_responses() -> dict[int | str, dict[str, Any]]:
    """The stream route's 200: one item schema per event, its `data` a JSON document."""
    items = [
        {
            "title": f"{name} event",
            "description": when,
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"const": name},
                **({"id": {"type": "string", "description": "the snapshot's version"}} if name == "snapshot" else {}),
                "data": {"type": "string", "contentMediaType": "application/json",
                         "contentSchema": {"$ref": REF.format(model=model)}},
            },
        }
        for name, (model, when) in EVENTS.items()
    ]
    return {200: {
        "description": "Server-Sent Events, one of the items below each (plus `: ping` comments every "
                       "SSE_HEARTBEAT_S and a first `retry:`). `data` is JSON of the schema named.",
        "content": {"text/event-stream": {"schema": {"oneOf": items}}},
    }}


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that produces the document described above."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _, events = models_json_schema([(SyncEvent, "serialization"), (EndEvent, "serialization")], ref_template=REF)
    for name, definition in events.get("$defs", {}).items():
        components.setdefault(name, definition)
    return schema
