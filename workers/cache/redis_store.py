"""Redis backend of the factor cache.

Layout (the gateway's ``GET /v1/factors`` / ``DELETE /v1/factors/{key}`` read and delete exactly this):

- ``curvedit:factors:chunk:{key}:{i}`` — strings, ``i = 0 .. n_chunks-1``, each at most
  ``factor_chunk_bytes`` (well under Redis's 512 MB string limit); their concatenation is a
  safetensors blob.
- ``curvedit:factors:index`` — hash, field ``{key}``, value JSON
  ``{key, bytes, created_at, last_used, model, module, kind, n_chunks, sha256, args}``.
- ``curvedit:factors:owners:{key}`` — set of the owners whose jobs wrote or read the entry.
  Entries are content-addressed, so identical inputs from two owners share one entry; each
  owner sees (and may release) only entries it is in the set of. A store opened with
  ``owner=None`` (the in-process ``curvedit edit``) records no owner.

Writes are atomic: chunks go to temporary keys (with a TTL, so a crashed writer leaves nothing
for good), then one MULTI renames them into place and writes the index field. Reads verify
length and sha256; a corrupt or partial entry is a miss and is deleted. The cache keeps its own
byte budget and evicts least-recently-used *cache entries only* — it never touches other keys.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import torch

from contract import keys
from contract.keys import FACTORS_INDEX, factor_chunk, factor_owners
from workers.cache.codec import checksum, decode, encode, index_record
from workers.cache.eviction import evict_lru
from workers.cache.keys import CacheKey

log = logging.getLogger(__name__)

_TMP_TTL_S = 3600
_FETCH_BATCH = 4

# Update last_used (and add the reader to the owners) only if the entry still exists (a
# concurrent delete must not resurrect it). KEYS: index, owners set; ARGV: digest, now, owner.
_TOUCH = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
rec['last_used'] = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
if ARGV[3] ~= '' then redis.call('SADD', KEYS[2], ARGV[3]) end
return 1
"""


def chunk_key(digest: str, i: int) -> str:
    return factor_chunk(digest, i)


def _tmp_chunk_key(digest: str, nonce: str, i: int) -> str:
    return keys.factor_tmp_chunk(digest, nonce, i)


class RedisFactorStore:
    """Factor cache in Redis: chunked safetensors blobs plus one index hash."""

    def __init__(self, client: Any, *, budget_bytes: int, chunk_bytes: int, owner: str | None = None) -> None:
        self.client = client
        self.owner = owner
        self.budget_bytes = budget_bytes
        self.chunk_bytes = max(1, chunk_bytes)
        self._touch = client.register_script(_TOUCH)

    # -- reading -----------------------------------------------------------------------------
    def _record(self, digest: str) -> dict[str, Any] | None:
        raw = self.client.hget(FACTORS_INDEX, digest)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return {"key": digest, "n_chunks": 0}

    def get(self, key: CacheKey) -> dict[str, torch.Tensor] | None:
        digest = key.digest
        rec = self._record(digest)
        if rec is None:
            return None
        if not key.matches(rec.get("args"), rec.get("kind"), rec.get("module")):
            log.warning("factor cache entry %s was written for other arguments; treating as a miss", digest)
            return None
        n = int(rec.get("n_chunks", 0))
        parts: list[bytes | None] = []
        for start in range(0, n, _FETCH_BATCH):  # bounded replies, however large the entry
            parts += self.client.mget([chunk_key(digest, i) for i in range(start, min(n, start + _FETCH_BATCH))])
        if n == 0 or any(p is None for p in parts):
            log.warning("factor cache entry %s is partial; deleting it", digest)
            self.delete(digest)
            return None
        blob = b"".join(p for p in parts if p is not None)
        if len(blob) != rec.get("bytes") or checksum(blob) != rec.get("sha256"):
            log.warning("factor cache entry %s fails its checksum; deleting it", digest)
            self.delete(digest)
            return None
        try:
            tensors = decode(blob)
        except Exception:  # noqa: BLE001 - an undecodable entry is a miss, whatever the reason
            log.warning("factor cache entry %s does not decode; deleting it", digest)
            self.delete(digest)
            return None
        self._touch(keys=[FACTORS_INDEX, factor_owners(digest)], args=[digest, time.time(), self.owner or ""])
        return tensors

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for field, raw in self.client.hgetall(FACTORS_INDEX).items():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"key": field.decode() if isinstance(field, bytes) else field, "n_chunks": 0})
        return out

    # -- writing -----------------------------------------------------------------------------
    def put(self, key: CacheKey, tensors: dict[str, torch.Tensor]) -> bool:
        blob = encode(tensors)
        if len(blob) > self.budget_bytes:
            log.warning(
                "factor cache entry %s (%d bytes) exceeds the cache budget (%d bytes); not stored",
                key.digest,
                len(blob),
                self.budget_bytes,
            )
            return False
        digest = key.digest
        nonce = secrets.token_hex(6)
        view = memoryview(blob)  # slices share the blob's memory: no second copy of a large entry
        pieces = [view[i : i + self.chunk_bytes] for i in range(0, len(blob), self.chunk_bytes)] or [view]
        for i, piece in enumerate(pieces):
            self.client.set(_tmp_chunk_key(digest, nonce, i), piece, ex=_TMP_TTL_S)
        record = index_record(key, blob, n_chunks=len(pieces))
        old = self._record(digest)
        with self.client.pipeline(transaction=True) as pipe:
            if old is not None:
                stale = [chunk_key(digest, i) for i in range(len(pieces), int(old.get("n_chunks", 0)))]
                if stale:
                    pipe.delete(*stale)
            for i in range(len(pieces)):
                pipe.rename(_tmp_chunk_key(digest, nonce, i), chunk_key(digest, i))
                pipe.persist(chunk_key(digest, i))
            pipe.hset(FACTORS_INDEX, digest, json.dumps(record))
            if self.owner:
                pipe.sadd(factor_owners(digest), self.owner)
            pipe.execute()
        self._evict(keep=digest)
        return True

    def delete(self, digest: str) -> bool:
        rec = self._record(digest)
        n = int(rec.get("n_chunks", 0)) if rec else 0
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(FACTORS_INDEX, digest)
            pipe.delete(factor_owners(digest))
            if n:
                pipe.delete(*[chunk_key(digest, i) for i in range(n)])
            removed = pipe.execute()[0]
        return bool(removed) or n > 0

    def _evict(self, keep: str) -> None:
        evict_lru(self, self.budget_bytes, keep)
