"""Fingerprints of the inputs an edit depends on: model files and corpora (sha256).

The model fingerprint hashes ``config.json``, the tokenizer files and every ``*.safetensors``
file of the model directory. Files inside a Hugging Face cache snapshot are symlinks to blobs
named by their own sha256, so those are taken from the blob name instead of re-reading them.
Digests of plain files are memoised per (path, size, mtime) within the process and, when a memo
file is given (the pipeline uses ``<state_dir>/file-digests.json``), across processes: each job
runs in a fresh work horse, and re-reading a 15 GB checkpoint per job would cost seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".tiktoken")
_memo: dict[tuple[str, int, int], str] = {}


def _load_memo(memo_path: Path | None) -> None:
    if memo_path is None or not memo_path.is_file():
        return
    with contextlib.suppress(OSError, ValueError):
        for k, v in json.loads(memo_path.read_text()).items():
            path, size, mtime = k.rsplit("|", 2)
            _memo.setdefault((path, int(size), int(mtime)), v)


def _save_memo(memo_path: Path | None) -> None:
    if memo_path is None:
        return
    with contextlib.suppress(OSError):
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_name(f".{memo_path.name}.{secrets.token_hex(4)}")
        live = {f"{p}|{s}|{m}": d for (p, s, m), d in _memo.items() if os.path.exists(p)}  # prune gone files
        tmp.write_text(json.dumps(live))
        os.replace(tmp, memo_path)


def file_digest(path: Path) -> str:
    """sha256 of one file (from the blob name when it is a content-addressed HF cache link)."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if _HEX64.match(target.name):
            return target.name
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key in _memo:
        return _memo[memo_key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    _memo[memo_key] = h.hexdigest()
    return _memo[memo_key]


def digest_memo_path(state_dir: Path) -> Path:
    """Where the pipeline keeps the cross-process digest memo."""
    return Path(state_dir) / "file-digests.json"


def model_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in Path(model_dir).iterdir() if p.is_file() and p.name.endswith(_SUFFIXES))


def fingerprint_model_dir(model_dir: Path, memo_path: Path | None = None) -> dict[str, str]:
    """``{file name: sha256}`` for the files that define the model and its tokenizer."""
    _load_memo(memo_path)
    before = len(_memo)
    digests = {p.name: file_digest(p) for p in model_files(model_dir)}
    if len(_memo) != before:
        _save_memo(memo_path)
    return digests


def combine(parts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(parts):
        h.update(f"{name}\0{parts[name]}\n".encode())
    return h.hexdigest()


def fingerprint_texts(texts: Iterable[str]) -> str:
    """sha256 over the documents in order (length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
