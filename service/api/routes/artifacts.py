"""``/v1/edit-jobs/{id}/artifacts``: list the files a succeeded job exported (path, size, sha256)
and download one of them, streamed.

Only the job's owner sees them (another key's job is a 404, as everywhere). The artifact
directory is ``<output_root>/<owner dir>/<result.output.relative_dir>``; a requested path is
confined to it: ``..``, absolute paths, empty or hidden components and any symlink along the way
are answered 404, as is a directory or a missing file. Hashes come from the top-level
``manifest.json`` (``files``, written by the worker at export), so listing never rehashes model
weights; a file whose size no longer matches its entry is listed with ``sha256: null``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from contract.outputs import owner_output_root
from contract.settings import Settings
from service.api.deps import JobReaderDep, OwnerDep, SettingsDep
from service.api.routes.jobs import JobIdPath, _owned
from service.errors import ApiError
from service.schemas.artifacts import ArtifactList
from service.schemas.common import ERROR_RESPONSES

router = APIRouter(prefix="/edit-jobs", tags=["artifacts"], responses=ERROR_RESPONSES)

MANIFEST = "manifest.json"
MAX_PAGE = 1000


def artifact_dir(settings: Settings, rec: dict[str, Any]) -> Path:
    """The job's artifact directory (404 unless the job succeeded and the directory exists)."""
    job_id = rec["id"]
    output = ((rec.get("result") or {}).get("output")) or {}
    rel = output.get("relative_dir")
    if rec.get("status") != "succeeded" or not isinstance(rel, str) or not rel:
        raise ApiError(404, "not_found", f"edit job {job_id} has no artifacts (status {rec.get('status')})")
    root = owner_output_root(settings.output_root, rec["owner"]).resolve()
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ApiError(404, "not_found", f"edit job {job_id} has no artifacts")
    directory = root.joinpath(*parts)
    if not _plain_dir(root, parts):
        raise ApiError(404, "not_found", f"the artifacts of edit job {job_id} are no longer on the server")
    return directory


def _plain_dir(root: Path, parts: tuple[str, ...]) -> bool:
    """True when every component below ``root`` exists and none is a symlink; the last is a directory."""
    here = root
    for part in parts:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return stat.S_ISDIR(os.lstat(here).st_mode) if parts else root.is_dir()


def confined_file(directory: Path, rel: str) -> Path:
    """``rel`` inside ``directory`` as a regular file reached without symlinks; 404 otherwise."""
    missing = ApiError(404, "not_found", f"no artifact {rel!r}")
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        raise missing
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise missing
    here = directory
    for i, part in enumerate(parts):
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except (OSError, ValueError):
            raise missing from None
        if stat.S_ISLNK(mode):
            raise missing
        if i < len(parts) - 1 and not stat.S_ISDIR(mode):
            raise missing
    if not stat.S_ISREG(os.lstat(here).st_mode):
        raise missing
    return here


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _recorded(directory: Path) -> dict[str, dict[str, Any]]:
    """``{path: {size, sha256}}`` from the top-level manifest's ``files`` (empty if absent/unreadable)."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    out: dict[str, dict[str, Any]] = {}
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            out[entry["path"]] = entry
    return out


def list_files(directory: Path) -> list[dict[str, Any]]:
    """Every regular file of the tree (symlinks neither followed nor listed), sorted by path."""
    recorded = _recorded(directory)
    out = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not (Path(dirpath) / d).is_symlink())
        for name in sorted(filenames):
            full = Path(dirpath) / name
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = full.relative_to(directory).as_posix()
            entry = recorded.get(rel)
            if entry is not None and entry.get("size") == st.st_size:
                sha = entry.get("sha256")
            elif name == MANIFEST:  # a manifest cannot record its own hash; manifests are small
                sha = _sha256(full)
            else:
                sha = None
            out.append({"path": rel, "size": st.st_size, "sha256": sha})
    return sorted(out, key=lambda e: e["path"])


@router.get("/{job_id}/artifacts", response_model=ArtifactList, summary="List a job's artifact files")
async def list_artifacts(
    job_id: JobIdPath,
    owner: OwnerDep,
    reader: JobReaderDep,
    settings: SettingsDep,
    cursor: Annotated[str | None, Query(max_length=4096, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
) -> dict[str, Any]:
    """Every file the job exported (model weights, tokenizer, ``delta.safetensors``,
    ``manifest.json``, ``report.md``, plots), sorted by path, with size and sha256."""
    rec = await _owned(reader, job_id, owner)
    directory = artifact_dir(settings, rec)
    files = await run_in_threadpool(list_files, directory)
    if cursor is not None:
        files = [f for f in files if f["path"] > cursor]
    page = files[:limit]
    return {"data": page, "next_cursor": page[-1]["path"] if len(files) > limit else None}


@router.get(
    "/{job_id}/artifacts/{path:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file, streamed"}},
    summary="Download one artifact file",
)
async def download_artifact(
    job_id: JobIdPath,
    path: Annotated[str, PathParam(max_length=4096, description="A path from the artifact list")],
    owner: OwnerDep,
    reader: JobReaderDep,
    settings: SettingsDep,
) -> FileResponse:
    """The file's bytes (``application/octet-stream``, or the PNG / Markdown / JSON type), streamed
    from disk; ``X-Content-SHA256`` carries the manifest's hash when it records one."""
    rec = await _owned(reader, job_id, owner)
    directory = artifact_dir(settings, rec)
    full = confined_file(directory, path)
    headers = {}
    entry = _recorded(directory).get(path)
    if entry is not None and entry.get("size") == full.stat().st_size and isinstance(entry.get("sha256"), str):
        headers["X-Content-SHA256"] = entry["sha256"]
    media = {".png": "image/png", ".md": "text/markdown; charset=utf-8", ".json": "application/json"}
    return FileResponse(
        full,
        media_type=media.get(full.suffix, "application/octet-stream"),
        filename=full.name,
        headers=headers,
    )
