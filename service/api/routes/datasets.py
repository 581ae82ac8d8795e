"""``/v1/datasets``: upload (multipart field ``file``, or the raw body), read, list, delete.

Uploads are size-limited (``CURVEDIT_MAX_UPLOAD_BYTES`` → 413), fingerprinted (sha256), checked
for their kind (``text`` / ``jsonl``) and stored atomically under ``CURVEDIT_DATASET_DIR``.
A dataset is visible only to the key that uploaded it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from starlette.datastructures import UploadFile

from service.api.deps import DatasetStoreDep, OwnerDep, SettingsDep
from service.errors import ApiError
from service.schemas.common import ERROR_RESPONSES
from service.schemas.datasets import Dataset, DatasetKind, DatasetList
from service.store.datasets import dataset_dir_of, new_dataset_id
from service.uploads import discard, finalize, receive, too_large, validate

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=ERROR_RESPONSES)

_JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/x-jsonlines")
_CHUNK = 1 << 20


def _owned(store: Any, dataset_id: str, owner: str) -> dict[str, Any]:
    rec = store.get(dataset_id) if re.fullmatch(r"ds_[A-Za-z0-9]{1,80}", dataset_id) else None
    if rec is None or rec.get("owner") != owner:
        raise ApiError(404, "not_found", f"no dataset {dataset_id!r}")
    return rec


async def _file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


def _raw_upload_type(content_type: str) -> bool:
    """Content types a raw (non-multipart) upload may have: text, ndjson, or unspecified bytes."""
    return (
        content_type in _JSONL_TYPES
        or content_type in ("", "application/octet-stream")
        or (content_type.startswith("text/") and content_type != "text/html")
    )


def _guess_kind(name: str | None, content_type: str) -> DatasetKind:
    if (name or "").lower().endswith((".jsonl", ".ndjson")) or content_type in _JSONL_TYPES:
        return "jsonl"
    return "text"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Dataset,
    responses={413: {"description": "Upload larger than CURVEDIT_MAX_UPLOAD_BYTES"}},
    summary="Upload a dataset",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "kind": {"type": "string", "enum": ["text", "jsonl"]},
                            "name": {"type": "string"},
                        },
                        "required": ["file"],
                    }
                },
                "text/plain": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            }
        }
    },
)
async def upload_dataset(
    request: Request,
    response: Response,
    owner: OwnerDep,
    settings: SettingsDep,
    store: DatasetStoreDep,
    kind: Annotated[DatasetKind | None, Query(description="Default: from the file name / content type")] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Multipart with a ``file`` part (optional ``kind``, ``name`` parts), or the raw bytes as the
    body (``text/plain`` → text, ``application/x-ndjson`` → jsonl; ``?kind=&name=``)."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if declared and declared.isdigit() and int(declared) > limit + (64 << 10 if "multipart" in content_type else 0):
        raise too_large(limit)
    directory = settings.dataset_dir
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "validation_error", "multipart upload needs a 'file' part", field="file")
        form_kind = form.get("kind")
        form_name = form.get("name")
        if isinstance(form_kind, str) and form_kind:
            if form_kind not in ("text", "jsonl"):
                raise ApiError(422, "validation_error", "kind must be 'text' or 'jsonl'", field="kind")
            kind = kind or form_kind  # type: ignore[assignment]
        name = name or (form_name if isinstance(form_name, str) and form_name else None) or upload.filename
        kind = kind or _guess_kind(upload.filename, upload.content_type or "")
        if upload.size is not None and upload.size > limit:
            raise too_large(limit)
        received = await receive(_file_chunks(upload), directory, limit)
    elif not _raw_upload_type(content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"cannot take a {content_type!r} body as a dataset: upload it as multipart/form-data (field "
            "'file') or as a raw text/plain or application/x-ndjson body",
        )
    else:
        kind = kind or _guess_kind(name, content_type)
        received = await receive(request.stream(), directory, limit)
    dataset_id = new_dataset_id()
    name = (name or dataset_id)[:200]
    try:
        validate(received, kind)
        finalize(received, directory, dataset_id, kind, {"id": dataset_id, "owner": owner, "name": name})
    except BaseException:
        discard(received.tmp_path.parent)
        raise
    rec = store.create(
        owner,
        dataset_id=dataset_id,
        name=name,
        kind=kind,
        size=received.size,
        sha256=received.sha256,
        extra={"records": received.records, "fields": received.fields},
    )
    response.headers["Location"] = f"/v1/datasets/{dataset_id}"
    return rec


@router.get("", response_model=DatasetList, summary="List your datasets, newest first")
def list_datasets(
    owner: OwnerDep,
    store: DatasetStoreDep,
    cursor: Annotated[str | None, Query(pattern=r"^ds_[A-Za-z0-9]{1,80}$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    items, next_cursor = store.list(owner, cursor=cursor, limit=limit)
    return {"data": items, "next_cursor": next_cursor}


@router.get("/{dataset_id}", response_model=Dataset, summary="One dataset's metadata")
def get_dataset(dataset_id: str, owner: OwnerDep, store: DatasetStoreDep) -> dict[str, Any]:
    return _owned(store, dataset_id, owner)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a dataset")
def delete_dataset(dataset_id: str, owner: OwnerDep, settings: SettingsDep, store: DatasetStoreDep) -> Response:
    _owned(store, dataset_id, owner)
    if store.delete(dataset_id) is not None:
        discard(dataset_dir_of(settings.dataset_dir, dataset_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
