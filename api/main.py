"""The ASGI app factory: ``api.main:create_app()`` (``uvicorn --factory api.main:create_app``).

Open SSE streams end by themselves when uvicorn starts shutting down (sse-starlette watches its
exit signal), under ``python -m api`` as under plain uvicorn.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from readmodel import Layout
from readmodel.connect import aconnect, apubsub_client

from . import openapi, redact
from .errors import install_handlers
from .fanout import Fanout
from .freshness import Positions
from .gcpolicy import HeapFreezer
from .limits import StreamLimiter
from .metrics import LatencyMiddleware, Metrics
from .routes import ops, users
from .settings import Settings
from .snapshots import SnapshotReader
from .stalled import StallRule
from .stream import StreamHandoff
from .stream import router as stream_router
from .textstream import router as text_stream_router

log = logging.getLogger("api")

INSECURE_BANNER = (
    "\n" + "!" * 78 + "\n"
    "!!  INSECURE DEV MODE: every user's status is served WITHOUT authentication.   !!\n"
    "!!  Never expose this server. Set API_KEYS and AUTH_SECRET for anything else.  !!\n" + "!" * 78
)


def create_app(settings: Settings | None = None, freeze_heap: bool = False) -> FastAPI:
    """Build the app; refuses (InsecureConfig) to build without credentials unless in dev mode.

    ``freeze_heap``: keep full garbage collections off the streams' path (:mod:`api.gcpolicy`), a
    process-wide policy for the server process (``python -m api`` turns it on), never for an app
    inside another process."""
    settings = settings or Settings.from_env()
    settings.check_secure()
    redact.install((*settings.api_keys, settings.auth_secret))
    if settings.insecure_dev:
        log.warning(INSECURE_BANNER)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Fail fast: a request answers 503 within about a second rather than hanging on Redis. A
        # bounded pool: a burst of stream opens waits for a connection instead of opening thousands.
        redis = aconnect(settings.store, settings.redis_max_connections, socket_keepalive=True,
                         socket_connect_timeout=2, socket_timeout=5)
        # Change notifications have a client of their own (and a name, to find it in CLIENT LIST).
        pubsub_redis = apubsub_client(settings.store, f"livestatus-api-fanout-{settings.store.key_prefix}-{os.getpid()}",
                                      socket_keepalive=True, socket_connect_timeout=2)
        layout = Layout(settings.store.key_prefix)
        positions = Positions(redis, pubsub_redis, settings.projector_layouts)
        await positions.start()
        reader = SnapshotReader(redis, layout, settings.estimate_cap_percent, settings.live_tasks_shown,
                                source=positions.source,
                                stall=StallRule(settings.stalled_factor, round(settings.stalled_after_s * 1000)))
        # A cluster's sharded messages are read from one node's connection after another, each
        # waiting up to poll_s: a short poll keeps a message on the next node from waiting long.
        fanout = Fanout(pubsub_redis, layout, reader, metrics, poll_s=0.02 if settings.store.cluster else 1.0)
        await fanout.start()
        app.state.redis, app.state.layout, app.state.reader, app.state.fanout = redis, layout, reader, fanout
        app.state.positions = positions
        freezer = HeapFreezer(streams=app.state.limiter) if freeze_heap else None
        if freezer is not None:
            await freezer.start()
        try:
            yield
        finally:
            if freezer is not None:
                await freezer.close()
            await positions.close()
            await fanout.close()
            await pubsub_redis.aclose()
            await redis.aclose()

    app = FastAPI(
        title="livestatus API",
        version="0.1.0",
        description=(
            "Per-user live status: snapshots for bots, Server-Sent Events for the web panel. "
            "Authenticate with `Authorization: Bearer <service key>` (any user) or a user token "
            "(header, `token` query parameter or `livestatus_token` cookie; that user only)."
        ),
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    openapi.install(app)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.limiter = StreamLimiter(
        settings.streams_per_user, settings.streams_per_token, settings.streams_per_service_key,
        settings.streams_per_process, metrics,
    )
    install_handlers(app)
    app.include_router(users)
    app.include_router(stream_router)
    app.include_router(text_stream_router)
    app.include_router(ops)
    if settings.cors_origins:
        wildcard = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=not wildcard,
            allow_methods=["GET"],
            allow_headers=["Authorization", "Last-Event-ID"],
        )
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.add_middleware(StreamHandoff)  # outermost: streams run after the stack that opened them returned
    return app
