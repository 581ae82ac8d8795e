"""The file index of an artifact tree: ``[{path, size, sha256}]`` for every regular file, recorded
in ``manifest.json`` under ``files`` so the gateway can list (and clients verify) artifacts
without rehashing gigabytes per request. Paths are POSIX, relative to the tree root, sorted;
symlinks are never followed or listed. A manifest cannot hash itself: the top-level
``manifest.json`` is left out of its own index.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path, name: str) -> dict[str, Any]:
    return {"path": name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def index_tree(root: Path, *, exclude: frozenset[str] = frozenset({"manifest.json"})) -> list[dict[str, Any]]:
    """Every regular file under ``root`` (not following symlinks), except the relative paths in
    ``exclude``."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            if full.is_symlink() or not full.is_file():
                continue
            rel = full.relative_to(root).as_posix()
            if rel in exclude:
                continue
            out.append(file_entry(full, rel))
    return sorted(out, key=lambda e: e["path"])


def add_file_indexes(root: Path, manifest_name: str = "manifest.json") -> None:
    """Record ``files`` (``index_tree`` of its directory) in every manifest of the tree, deepest
    first, so a parent's index hashes its children's finished manifests. Call it on the staging
    tree once everything else is written."""
    root = Path(root)
    manifests = sorted(
        (p for p in root.rglob(manifest_name) if p.is_file() and not p.is_symlink()),
        key=lambda p: len(p.relative_to(root).parts),
        reverse=True,
    )
    for path in manifests:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["files"] = index_tree(path.parent, exclude=frozenset({manifest_name}))
        tmp = path.with_name(f".{manifest_name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str, allow_nan=True), encoding="utf-8")
        os.replace(tmp, path)
