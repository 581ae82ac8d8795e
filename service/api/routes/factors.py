"""``/v1/factors``: list and release your factor cache entries (the Redis tier).

Entries are content-addressed and may be shared by owners whose jobs had identical inputs, but
each owner sees only the entries its own jobs wrote or read, and ``DELETE`` drops only its own
reference (another owner's entry is a 404); the bytes go when no owner is left."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status

from service.api.deps import OwnerDep, RedisDep
from service.errors import ApiError
from service.schemas.common import ERROR_RESPONSES
from service.schemas.factors import FactorList
from service.store.factors import list_factors, release_factor

router = APIRouter(prefix="/factors", tags=["factors"], responses=ERROR_RESPONSES)


@router.get("", response_model=FactorList, summary="Cached factor entries, their keys and bytes")
def get_factors(owner: OwnerDep, r: RedisDep) -> dict[str, Any]:
    entries = list_factors(r, owner)
    return {"data": entries, "count": len(entries), "total_bytes": sum(int(e.get("bytes") or 0) for e in entries)}


@router.delete(
    "/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Release one of your cache entries (deleted once no other owner uses it)",
)
def remove_factor(
    key: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")], owner: OwnerDep, r: RedisDep
) -> Response:
    if not release_factor(r, key, owner):
        raise ApiError(404, "not_found", f"no factor cache entry {key!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
