"""The FastAPI gateway: ``create_app(settings)`` builds the app; the lifespan opens the Redis
connection pools (a sync one for the threadpool routes and the job store's transactions, an
async one for the read paths and event streams) and the process's job-update subscription.
Run with ``uvicorn service.main:app`` (settings from ``CURVEDIT_*``).

The gateway validates, authenticates, stores job records and streams progress; it never
imports torch (tests assert it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from contract.logs import configure_logging
from contract.roots import check_roots
from contract.settings import Settings, get_settings
from contract.tracing import setup_tracing
from service.api.deps import reject_unknown_query
from service.api.routes import artifacts, datasets, factors, health, jobs, webhooks
from service.errors import install_error_handlers
from service.event_stream import UpdateHub
from service.log_context import LogContextMiddleware
from service.metrics import build_registry
from service.middleware import BodyLimitMiddleware, JsonTextMiddleware, RequestCounterMiddleware
from service.request_id import RequestIdMiddleware

log = logging.getLogger("curvedit.gateway")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
API_V1 = "/v1"


def open_redis(settings: Settings) -> redis.Redis:
    """A client over a connection pool; bytes responses (RQ's JSON serializer needs them)."""
    url = settings.redis_url or DEFAULT_REDIS_URL
    pool = redis.ConnectionPool.from_url(
        url, socket_connect_timeout=2.0, socket_timeout=10.0, health_check_interval=30, max_connections=64
    )
    return redis.Redis(connection_pool=pool)


def open_async_redis(settings: Settings) -> aioredis.Redis:
    """The async client (same URL, bytes responses). Open event streams do not hold a connection
    between reads, so the pool is sized for concurrent reads, not for streams."""
    url = settings.redis_url or DEFAULT_REDIS_URL
    pool: aioredis.BlockingConnectionPool = aioredis.BlockingConnectionPool.from_url(
        url, socket_connect_timeout=2.0, socket_timeout=10.0, health_check_interval=30, max_connections=128, timeout=10
    )
    return aioredis.Redis(connection_pool=pool)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.log_format == "json":
        configure_logging(settings)
    setup_tracing(settings, "gateway")
    check_roots(settings)  # a model/data root holding state or outputs would cross tenants
    if not settings.key_table():
        log.warning("CURVEDIT_API_KEYS is empty: authentication is DISABLED (every request is 'anonymous')")
    if not settings.redis_url:
        log.warning("CURVEDIT_REDIS_URL is not set; using %s", DEFAULT_REDIS_URL)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = open_redis(settings)
        app.state.aredis = open_async_redis(settings)
        app.state.updates = UpdateHub(app.state.aredis)
        app.state.updates.start()
        try:
            yield
        finally:
            await app.state.updates.close()
            with contextlib.suppress(Exception):  # bounded: shutdown must not hang on a dead socket
                await asyncio.wait_for(app.state.aredis.aclose(), 5)
                await asyncio.wait_for(app.state.aredis.connection_pool.disconnect(), 5)
            app.state.redis.close()
            app.state.redis.connection_pool.disconnect()
            app.state.redis = app.state.aredis = app.state.updates = None

    app = FastAPI(
        title="curvedit",
        version="0.1.0",
        description="Removes memorized data from transformer language models by editing their weights "
        "along the loss-curvature (K-FAC) spectrum. Errors: {error: {code, message, field}}; an unexpected "
        "error is a 500 with code 'internal' and the request id (also in every response's X-Request-ID).",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.settings = settings
    app.state.redis = app.state.aredis = app.state.updates = None
    registry, request_counter = build_registry(lambda: app.state.redis, settings)
    app.state.metrics_registry = registry
    install_error_handlers(app)

    templates: dict[int, str] = {}
    for router, prefix in (
        (jobs.router, API_V1),
        (artifacts.router, API_V1),
        (datasets.router, API_V1),
        (factors.router, API_V1),
        (webhooks.router, API_V1),
        (health.router, ""),
    ):
        app.include_router(router, prefix=prefix)
        templates.update({id(route): prefix + route.path for route in router.routes if isinstance(route, APIRoute)})

    # outermost last: request id + catch-all 500, request counter, body limit, JSON text check
    app.add_middleware(JsonTextMiddleware)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(RequestCounterMiddleware, counter=request_counter, templates=templates)
    app.add_middleware(LogContextMiddleware)  # inside RequestIdMiddleware: the id is set by then
    app.add_middleware(RequestIdMiddleware)
    return app


app: FastAPI  # created lazily by __getattr__ below


def __getattr__(name: str) -> FastAPI:
    """``service.main:app`` for uvicorn, built on first access from the environment."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
