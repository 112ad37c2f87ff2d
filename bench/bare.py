"""The snapshot-read baseline: a bare Starlette app doing the same Redis read as the API.

``python -m bench.bare --host H --port P`` serves ``GET /users/{uid}/status`` with
``projector.readmodel.aread_snapshot`` and nothing else (no auth, validation, estimates or
metrics), under the same uvicorn settings as the API. ``GET /users/{uid}/status/stream`` is the
leanest SSE stream we know how to write on the same stack (the capacity floor): one task per
stream, the snapshot as the first event, then heartbeats until the client leaves; no fan-out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from readmodel import Layout, View, aread_snapshot


def create_app() -> Starlette:
    layout = Layout(os.environ.get("KEY_PREFIX", "ls"))

    @asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.redis = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        yield
        await app.state.redis.aclose()

    async def status(request: Request) -> JSONResponse:
        uid = request.path_params["uid"]
        return JSONResponse(await aread_snapshot(request.app.state.redis, layout, uid, View(int(time.time() * 1000))))

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    class Stream:
        """A raw ASGI SSE endpoint: no extra tasks, the request's own task waits for the client."""

        async def __call__(self, scope, receive, send) -> None:
            uid = scope["path_params"]["uid"]
            snapshot = await aread_snapshot(scope["app"].state.redis, layout, uid, View(int(time.time() * 1000)))
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]})
            body = f"id: {snapshot['version']}\nevent: snapshot\ndata: {json.dumps(snapshot)}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            while True:
                try:
                    message = await asyncio.wait_for(receive(), 15)
                except TimeoutError:
                    await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                    continue
                if message["type"] == "http.disconnect":
                    return

    return Starlette(routes=[Route("/users/{uid}/status", status), Route("/users/{uid}/status/stream", Stream()),
                             Route("/healthz", healthz)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(create_app, factory=True, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
