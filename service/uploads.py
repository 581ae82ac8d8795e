"""Receiving dataset uploads: stream to a temporary file beside the destination while counting
and hashing (sha256), enforce the size limit, validate the content for its kind, then rename
into place (atomic: a reader sees the whole file or none).

Kinds: ``text`` — UTF-8 text, documents separated by blank lines; ``jsonl`` — one JSON object
per line with a string ``text`` field, or ``prefix`` and ``suffix`` fields (a recitation set).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import ApiError

SUFFIX = {"text": ".txt", "jsonl": ".jsonl"}


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
    """Write ``chunks`` to a temporary file in ``directory``; 413 past ``limit`` bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=directory)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                digest.update(chunk)
                fh.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Received(Path(name), size, digest.hexdigest())


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


def finalize(received: Received, directory: Path, dataset_id: str, kind: str) -> str:
    """Rename the temporary file to ``<id><suffix>``; returns that file name."""
    filename = f"{dataset_id}{SUFFIX[kind]}"
    os.chmod(received.tmp_path, 0o644)
    os.replace(received.tmp_path, directory / filename)
    return filename
