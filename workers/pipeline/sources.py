"""Resolve the spec's text and pair sources into Python data.

- ``dataset_id``: an upload stored by the gateway at ``<dataset_dir>/<dataset_id>/data`` with
  ``meta.json`` beside it (``format``: ``txt`` | ``jsonl`` when known; otherwise sniffed).
- ``path``: a file under ``settings.data_root`` (confined), ``.txt`` (documents separated by
  blank lines) or ``.jsonl`` (objects with ``text``, or ``prefix`` / ``suffix`` for pairs).
- inline ``texts`` / ``pairs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contract.settings import Settings
from contract.spec import PairSource, TextSource
from workers.pipeline.confine import confined
from workers.pipeline.errors import PipelineError


def _dataset_file(dataset_id: str, settings: Settings) -> tuple[Path, str | None]:
    folder = confined(settings.dataset_dir, dataset_id, "dataset_id")
    data = folder / "data"
    if not data.is_file():
        raise PipelineError("dataset_not_found", f"dataset {dataset_id!r} does not exist (or was deleted)")
    fmt = None
    meta = folder / "meta.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
            fmt = info.get("format") or Path(str(info.get("filename") or "")).suffix.lstrip(".") or None
        except ValueError:
            fmt = None
    return data, fmt


def _locate(source: TextSource | PairSource, settings: Settings, field: str) -> tuple[Path, str]:
    if source.dataset_id is not None:
        path, fmt = _dataset_file(source.dataset_id, settings)
    else:
        assert source.path is not None
        path = confined(settings.data_root, source.path, f"{field}.path")
        if not path.is_file():
            raise PipelineError("dataset_not_found", f"{field}.path {source.path!r}: no such file under the data root")
        fmt = path.suffix.lstrip(".").lower() or None
    if fmt not in ("txt", "jsonl"):
        head = path.read_text(encoding="utf-8", errors="replace")[:4096].lstrip()
        fmt = "jsonl" if head.startswith("{") else "txt"
    return path, fmt


def _jsonl(path: Path, field: str) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise PipelineError("invalid_dataset", f"{field}: line {n} of {path.name} is not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise PipelineError("invalid_dataset", f"{field}: line {n} of {path.name} is not a JSON object")
        rows.append(obj)
    return rows


def resolve_texts(source: TextSource, settings: Settings, field: str = "calibration") -> list[str]:
    """The documents of a text source (non-empty)."""
    if source.texts is not None:
        return list(source.texts)
    path, fmt = _locate(source, settings, field)
    if fmt == "jsonl":
        texts = []
        for obj in _jsonl(path, field):
            if not isinstance(obj.get("text"), str):
                raise PipelineError("invalid_dataset", f"{field}: every .jsonl line needs a string 'text' field")
            texts.append(obj["text"])
    else:
        raw = path.read_text(encoding="utf-8", errors="replace")
        texts = [b.strip() for b in raw.replace("\r\n", "\n").split("\n\n") if b.strip()]
    if not texts:
        raise PipelineError("invalid_dataset", f"{field}: the source holds no text")
    return texts


def resolve_pairs(source: PairSource, settings: Settings, field: str = "evaluation.recitation") -> list[dict[str, Any]]:
    """``[{prefix, suffix}]`` where each side is a string or a list of token ids."""
    if source.pairs is not None:
        return [p.model_dump() for p in source.pairs]
    path, _ = _locate(source, settings, field)
    pairs = []
    for obj in _jsonl(path, field):
        if "prefix" not in obj or "suffix" not in obj:
            raise PipelineError("invalid_dataset", f"{field}: every line needs 'prefix' and 'suffix' fields")
        pairs.append({"prefix": obj["prefix"], "suffix": obj["suffix"]})
    if not pairs:
        raise PipelineError("invalid_dataset", f"{field}: the source holds no pairs")
    return pairs
