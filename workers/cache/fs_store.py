"""Filesystem / object-store tier of the factor cache (any fsspec URI, or a plain directory).

Per entry: ``<root>/<key>.safetensors`` (the blob) and ``<root>/<key>.json`` (the same record the
Redis index holds, ``n_chunks`` = 1). Both are written to a temporary name and renamed into
place, blob first, record last, so a reader sees a complete entry or none; reads verify the
sha256. Own byte budget with least-recently-used eviction. The record's ``owners`` lists the
owners whose jobs wrote or read the entry (as the Redis tier's owners set does).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import fsspec
import torch

from workers.cache.codec import checksum, decode, encode, index_record
from workers.cache.eviction import evict_lru
from workers.cache.keys import CacheKey

log = logging.getLogger(__name__)


class FsFactorStore:
    """Factor cache on a filesystem reachable through fsspec."""

    def __init__(self, uri: str, *, budget_bytes: int, owner: str | None = None) -> None:
        self.fs, root = fsspec.core.url_to_fs(uri)
        self.owner = owner
        self.root = root.rstrip("/")
        self.budget_bytes = budget_bytes
        self.fs.makedirs(self.root, exist_ok=True)

    def _blob(self, digest: str) -> str:
        return f"{self.root}/{digest}.safetensors"

    def _meta(self, digest: str) -> str:
        return f"{self.root}/{digest}.json"

    def _write_atomic(self, path: str, data: bytes) -> None:
        tmp = f"{self.root}/.tmp-{secrets.token_hex(8)}-{path.rsplit('/', 1)[-1]}"
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def _record(self, digest: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self._meta(digest)))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"key": digest}

    def get(self, key: CacheKey) -> dict[str, torch.Tensor] | None:
        digest = key.digest
        rec = self._record(digest)
        if rec is None:
            return None
        if not key.matches(rec.get("args"), rec.get("kind"), rec.get("module")):
            return None
        try:
            blob = self.fs.cat_file(self._blob(digest))
        except FileNotFoundError:
            blob = b""
        if len(blob) != rec.get("bytes") or checksum(blob) != rec.get("sha256"):
            log.warning("factor cache entry %s is corrupt or partial; deleting it", digest)
            self.delete(digest)
            return None
        try:
            tensors = decode(blob)
        except Exception:  # noqa: BLE001 - undecodable is a miss
            self.delete(digest)
            return None
        rec["last_used"] = time.time()
        rec["owners"] = self._with_owner(rec.get("owners"))
        self._write_atomic(self._meta(digest), json.dumps(rec).encode())
        return tensors

    def put(self, key: CacheKey, tensors: dict[str, torch.Tensor]) -> bool:
        blob = encode(tensors)
        if len(blob) > self.budget_bytes:
            log.warning("factor cache entry %s exceeds the budget; not stored", key.digest)
            return False
        digest = key.digest
        record = index_record(key, blob, n_chunks=1)
        record["owners"] = self._with_owner((self._record(digest) or {}).get("owners"))
        self._write_atomic(self._blob(digest), blob)
        self._write_atomic(self._meta(digest), json.dumps(record).encode())
        self._evict(keep=digest)
        return True

    def _with_owner(self, owners: Any) -> list[str]:
        out = [str(o) for o in owners] if isinstance(owners, list) else []
        if self.owner and self.owner not in out:
            out.append(self.owner)
        return out

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for path in self.fs.glob(f"{self.root}/*.json"):
            name = path.rsplit("/", 1)[-1][: -len(".json")]
            rec = self._record(name)
            if rec is not None:
                out.append(rec)
        return out

    def delete(self, digest: str) -> bool:
        removed = False
        for path in (self._meta(digest), self._blob(digest)):
            try:
                self.fs.rm_file(path)
                removed = True
            except FileNotFoundError:
                pass
        return removed

    def _evict(self, keep: str) -> None:
        evict_lru(self, self.budget_bytes, keep)
