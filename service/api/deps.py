"""Request dependencies as ``Annotated`` aliases: settings, the Redis clients (sync and async),
the stores, the async job reader and update hub, the request id and the authenticated owner.

Auth: ``Authorization: Bearer <key>`` checked against ``Settings.api_keys`` (``name:key,...``);
the owner is the key's name, and every job and dataset is scoped to it. With no keys
configured auth is off and every request is owner ``anonymous`` (``create_app`` logs a warning).
"""

from __future__ import annotations

import hmac
from typing import Annotated

import redis
import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contract.settings import Settings
from contract.store.jobs import JobStore
from service.errors import ApiError
from service.event_stream import UpdateHub
from service.job_reader import JobReader
from service.store.datasets import DatasetStore

ANONYMOUS = "anonymous"

_bearer = HTTPBearer(auto_error=False, description="API key from CURVEDIT_API_KEYS")
bearer_credentials = _bearer  # the same scheme for routes that check a key outside OwnerDep (/metrics)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


async def get_async_redis(request: Request) -> aioredis.Redis:
    return request.app.state.aredis


async def get_job_reader(request: Request) -> JobReader:
    return JobReader(request.app.state.aredis)


async def get_updates(request: Request) -> UpdateHub:
    return request.app.state.updates


async def get_request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
AsyncRedisDep = Annotated[aioredis.Redis, Depends(get_async_redis)]
JobReaderDep = Annotated[JobReader, Depends(get_job_reader)]
UpdatesDep = Annotated[UpdateHub, Depends(get_updates)]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]


async def get_job_store(r: RedisDep) -> JobStore:
    return JobStore(r)


async def get_dataset_store(r: RedisDep) -> DatasetStore:
    return DatasetStore(r)


JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
DatasetStoreDep = Annotated[DatasetStore, Depends(get_dataset_store)]


def get_owner(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    table = settings.key_table()
    if not table:
        return ANONYMOUS
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="curvedit"'},
        )
    given = credentials.credentials.encode()
    owner = None
    for key, name in table.items():
        if hmac.compare_digest(given, key.encode()):
            owner = name
    if owner is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "the API key is not valid",
            headers={"WWW-Authenticate": 'Bearer realm="curvedit", error="invalid_token"'},
        )
    return owner


async def _owner(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    return get_owner(settings, credentials)


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(route: object) -> frozenset[str]:
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        found: set[str] = set()
        stack = [getattr(route, "dependant", None)]
        while stack:
            dependant = stack.pop()
            if dependant is not None:
                found.update(p.alias for p in dependant.query_params)
                stack.extend(dependant.dependencies)
        names = _QUERY_NAMES[id(route)] = frozenset(found)
    return names


async def reject_unknown_query(request: Request) -> None:
    """422 naming a query parameter the route does not take: a mistyped ``?limt=5`` is an
    error, not a silently ignored option (the OpenAPI schema lists every parameter there is)."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    allowed = _query_names(route)
    for name in request.query_params:
        if name not in allowed:
            takes = ", ".join(sorted(allowed)) or "no query parameters"
            raise ApiError(
                422,
                "validation_error",
                f"unknown query parameter {name!r}; {request.url.path} takes: {takes}",
                field=name or None,
            )


# Every dependency here is ``async def``: FastAPI runs plain ``def`` dependencies in the worker
# thread pool, and the async routes (reads, event streams) must not touch it.
OwnerDep = Annotated[str, Depends(_owner)]
