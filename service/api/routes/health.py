"""``/healthz`` (the process is up), ``/readyz`` (Redis reachable and at least one live worker on
the queue; 503 with the reason otherwise) and ``/metrics`` (Prometheus; it needs a valid API key
like the ``/v1`` routes unless ``CURVEDIT_METRICS_PUBLIC`` is set — queue depths, job counts and
cache sizes are not for anyone who can reach the port)."""

from __future__ import annotations

from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contract.store.queue import live_workers
from service.api.deps import RedisDep, SettingsDep, bearer_credentials, get_owner
from service.errors import error_body
from service.schemas.common import ERROR_RESPONSES, ErrorResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: Redis reachable and at least one live worker",
    responses={503: {"model": ErrorResponse, "description": "Not ready (code not_ready): Redis or workers missing"}},
)
def readyz(r: RedisDep, settings: SettingsDep) -> Any:
    try:
        r.ping()
        workers = live_workers(r, settings)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return JSONResponse(error_body("not_ready", f"Redis is unreachable: {exc}"), status_code=503)
    if workers < 1:
        return JSONResponse(
            error_body("not_ready", f"no live worker is listening on queue {settings.queue_name!r}", workers=0),
            status_code=503,
        )
    return {"status": "ready", "redis": "ok", "workers": workers, "queue": settings.queue_name}


async def metrics_access(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_credentials)]
) -> None:
    """A valid API key, unless ``settings.metrics_public`` (or auth is off altogether)."""
    if not settings.metrics_public:
        get_owner(settings, credentials)


@router.get(
    "/metrics",
    summary="Prometheus metrics (needs an API key unless CURVEDIT_METRICS_PUBLIC)",
    response_class=Response,
    dependencies=[Depends(metrics_access)],
    responses={401: ERROR_RESPONSES[401]},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
