"""Receiving dataset uploads: stream into a temporary directory beside the destination while
counting and hashing (sha256), enforce the size limit, validate the content for its kind, write
``meta.json``, then rename the directory into place (atomic: a reader sees all or nothing).

Layout read by the worker (``workers/pipeline/sources.py``)::

    <dataset_dir>/<dataset_id>/data        the uploaded bytes
    <dataset_dir>/<dataset_id>/meta.json   {"format": "txt"|"jsonl", "kind", "sha256", "bytes", ...}

Kinds: ``text`` — UTF-8 text, documents separated by blank lines; ``jsonl`` — one JSON object
per line with a string ``text`` field, or ``prefix`` and ``suffix`` fields (a recitation set).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import ApiError
from service.json_text import find_surrogate

FORMAT = {"text": "txt", "jsonl": "jsonl"}


@dataclass
class Received:
    tmp_path: Path
    size: int
    sha256: str
    records: int = 0
    fields: list[str] = field(default_factory=list)


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"upload is larger than the limit of {limit} bytes (CURVEDIT_MAX_UPLOAD_BYTES)",
        field="file",
        extra={"limit_bytes": limit},
    )


async def receive(chunks: AsyncIterator[bytes], directory: Path, limit: int) -> Received:
    """Write ``chunks`` to ``data`` in a temporary directory in ``directory``; 413 past ``limit``."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".upload-", dir=directory))
    name = tmp_dir / "data"
    digest = hashlib.sha256()
    size = 0
    try:
        with name.open("wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                digest.update(chunk)
                fh.write(chunk)
    except BaseException:
        discard(tmp_dir)
        raise
    return Received(name, size, digest.hexdigest())


def discard(path: Path) -> None:
    """Remove a (temporary or deleted) dataset directory; renamed away first so it vanishes at once."""
    if not path.exists():
        return
    doomed = path.with_name(f".deleting-{path.name}-{os.urandom(4).hex()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def validate(received: Received, kind: str) -> None:
    """Check the file's content for ``kind``; 422 (field ``file``) naming the first bad line."""
    if received.size == 0:
        raise ApiError(422, "empty_dataset", "the uploaded dataset is empty", field="file")
    if kind == "text":
        decoder = codecs.getincrementaldecoder("utf-8")()
        blocks, in_block = 0, False
        with received.tmp_path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    text = decoder.decode(line)
                except UnicodeDecodeError as exc:
                    raise ApiError(422, "invalid_dataset", f"line {n}: not UTF-8 text ({exc})", field="file") from exc
                if text.strip():
                    blocks += 0 if in_block else 1
                    in_block = True
                else:
                    in_block = False
        received.records = blocks
        if blocks == 0:
            raise ApiError(422, "empty_dataset", "the uploaded text holds no documents", field="file")
        return
    common: set[str] | None = None
    count = 0
    with received.tmp_path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ApiError(422, "invalid_dataset", f"line {n}: not valid JSON ({exc})", field="file") from exc
            if not isinstance(obj, dict):
                raise ApiError(422, "invalid_dataset", f"line {n}: expected a JSON object", field="file")
            bad = find_surrogate(obj)
            if bad is not None:
                raise ApiError(
                    422,
                    "invalid_text",
                    f"line {n}: {bad or 'the record'} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape "
                    "without its pair), which is not valid Unicode text",
                    field="file",
                )
            has_text = isinstance(obj.get("text"), str)
            has_pair = "prefix" in obj and "suffix" in obj
            if not (has_text or has_pair):
                raise ApiError(
                    422,
                    "invalid_dataset",
                    f"line {n}: a record needs a string 'text' field, or 'prefix' and 'suffix' fields",
                    field="file",
                )
            present = {k for k in ("text", "prefix", "suffix") if k in obj}
            common = present if common is None else common & present
            count += 1
    if count == 0:
        raise ApiError(422, "empty_dataset", "the uploaded jsonl holds no records", field="file")
    received.records = count
    received.fields = sorted(common or set())


def finalize(received: Received, directory: Path, dataset_id: str, kind: str, meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` and rename the temporary directory to ``<dataset_id>``; returns it."""
    tmp_dir = received.tmp_path.parent
    info = {"format": FORMAT[kind], "kind": kind, "sha256": received.sha256, "bytes": received.size, **meta}
    (tmp_dir / "meta.json").write_text(json.dumps(info, indent=2))
    os.chmod(tmp_dir, 0o755)
    final = directory / dataset_id
    os.rename(tmp_dir, final)
    return final
