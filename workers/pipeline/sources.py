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


def _lines(path: Path, field: str) -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line; a line that is not UTF-8 is ``invalid_input``."""
    out = []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start]
            raise PipelineError("invalid_input", f"{field} line {n}: not UTF-8 text (byte {bad:#04x})") from exc
        if line.strip():
            out.append((n, line))
    return out


def _decode_text(path: Path, field: str) -> str:
    """The whole file as UTF-8 text; undecodable bytes are ``invalid_input`` naming the line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PipelineError("invalid_input", f"{field} line {line}: not UTF-8 text") from exc


def _jsonl(path: Path, field: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line of a .jsonl source."""
    rows = []
    for n, line in _lines(path, field):
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise PipelineError("invalid_input", f"{field} line {n}: not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise PipelineError("invalid_input", f"{field} line {n}: expected a JSON object, got {type(obj).__name__}")
        rows.append((n, obj))
    return rows


def _text_or_ids(value: Any, where: str, side: str) -> str | list[int]:
    """A pair side as given: a string, or a list of non-negative integer token ids."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        return list(value)
    got = "null" if value is None else type(value).__name__
    if isinstance(value, list):
        bad = next(t for t in value if not (isinstance(t, int) and not isinstance(t, bool) and t >= 0))
        got = f"a list holding {bad!r}"
    raise PipelineError(
        "invalid_input", f"{where}: {side} must be a string or a list of non-negative token ids, got {got}"
    )


def resolve_texts(source: TextSource, settings: Settings, field: str = "calibration") -> list[str]:
    """The documents of a text source (non-empty)."""
    if source.texts is not None:
        return list(source.texts)
    path, fmt = _locate(source, settings, field)
    if fmt == "jsonl":
        texts = []
        for n, obj in _jsonl(path, field):
            if not isinstance(obj.get("text"), str):
                raise PipelineError("invalid_input", f"{field} line {n}: 'text' must be a string")
            texts.append(obj["text"])
    else:
        raw = _decode_text(path, field)
        texts = [b.strip() for b in raw.replace("\r\n", "\n").split("\n\n") if b.strip()]
    if not texts:
        raise PipelineError("invalid_dataset", f"{field}: the source holds no text")
    return texts


def resolve_pairs(source: PairSource, settings: Settings, field: str = "evaluation.recitation") -> list[dict[str, Any]]:
    """``[{prefix, suffix}]`` where each side is a string or a list of token ids."""
    return [pair for _, pair in resolve_pairs_with_origin(source, settings, field)]


def resolve_pairs_with_origin(
    source: PairSource, settings: Settings, field: str = "evaluation.recitation"
) -> list[tuple[str, dict[str, Any]]]:
    """``[(where, {prefix, suffix})]``; ``where`` names the pair in error messages
    (``evaluation.recitation.pairs[2]`` inline, ``evaluation.recitation line 3`` from a file)."""
    if source.pairs is not None:
        return [(f"{field}.pairs[{i}]", p.model_dump()) for i, p in enumerate(source.pairs)]
    path, _ = _locate(source, settings, field)
    pairs = []
    for n, obj in _jsonl(path, field):
        where = f"{field} line {n}"
        missing = [k for k in ("prefix", "suffix") if k not in obj]
        if missing:
            raise PipelineError("invalid_input", f"{where}: missing {' and '.join(repr(k) for k in missing)}")
        pair = {side: _text_or_ids(obj[side], where, side) for side in ("prefix", "suffix")}
        pairs.append((where, pair))
    if not pairs:
        raise PipelineError("invalid_dataset", f"{field}: the source holds no pairs")
    return pairs
