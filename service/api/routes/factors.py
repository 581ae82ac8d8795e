"""``/v1/factors``: list and delete factor cache entries (the Redis tier). The cache is shared
by every key (entries are content-addressed, not owned)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status

from service.api.deps import OwnerDep, RedisDep
from service.errors import ApiError
from service.schemas.common import ERROR_RESPONSES
from service.schemas.factors import FactorList
from service.store.factors import delete_factor, list_factors

router = APIRouter(prefix="/factors", tags=["factors"], responses=ERROR_RESPONSES)


@router.get("", response_model=FactorList, summary="Cached factor entries, their keys and bytes")
def get_factors(_owner: OwnerDep, r: RedisDep) -> dict[str, Any]:
    entries = list_factors(r)
    return {"data": entries, "count": len(entries), "total_bytes": sum(int(e.get("bytes") or 0) for e in entries)}


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT, summary="Evict one cache entry")
def remove_factor(
    key: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")], _owner: OwnerDep, r: RedisDep
) -> Response:
    if not delete_factor(r, key):
        raise ApiError(404, "not_found", f"no factor cache entry {key!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
