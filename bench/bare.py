"""The snapshot-read baseline: a bare Starlette app doing the same Redis read as the API.

``python -m bench.bare --host H --port P`` serves ``GET /users/{uid}/status`` with
``projector.readmodel.aread_snapshot`` and nothing else (no auth, validation, estimates or
metrics), under the same uvicorn settings as the API.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from projector.readmodel import Layout, aread_snapshot


def create_app() -> Starlette:
    layout = Layout(os.environ.get("KEY_PREFIX", "ls"))

    @asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.redis = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        yield
        await app.state.redis.aclose()

    async def status(request: Request) -> JSONResponse:
        uid = request.path_params["uid"]
        return JSONResponse(await aread_snapshot(request.app.state.redis, uid, int(time.time() * 1000), layout))

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/users/{uid}/status", status), Route("/healthz", healthz)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(create_app, factory=True, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
