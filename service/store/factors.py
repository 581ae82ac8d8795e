"""Read-and-delete view of the factor cache's Redis tier for the gateway (no torch), per owner.

The cache (``workers/cache/redis_store.py``) owns the layout: ``curvedit:factors:index`` is a hash
``{key: JSON {key, bytes, created_at, last_used, model, module, kind, n_chunks, sha256, args}}``,
``curvedit:factors:chunk:{key}:{i}`` (``i < n_chunks``) hold the data and
``curvedit:factors:owners:{key}`` is the set of owners whose jobs wrote or read the entry.

Entries are content-addressed, so identical inputs of two owners share one entry, but an owner
sees only the entries it is an owner of, and ``release_factor`` drops only its own reference:
the entry itself (index field, chunks, owners set) goes, in one Lua step, when no owner is left
(or later by the cache's LRU eviction). The filesystem tier is not listed here.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from contract.keys import FACTORS_INDEX, factor_chunk_prefix, factor_owners

# KEYS: index, owners set; ARGV: digest, owner, chunk-key prefix. Returns -1 when the entry does
# not exist or ``owner`` is not among its owners, else the number of owners left (0: deleted).
_RELEASE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return -1 end
if redis.call('SREM', KEYS[2], ARGV[2]) == 0 then return -1 end
local left = redis.call('SCARD', KEYS[2])
if left > 0 then return left end
local ok, rec = pcall(cjson.decode, raw)
local n = 0
if ok and type(rec) == 'table' then n = tonumber(rec['n_chunks']) or 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
for i = 0, n - 1 do redis.call('DEL', ARGV[3] .. i) end
return 0
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _all_entries(r: redis.Redis) -> list[dict[str, Any]]:
    out = []
    for k, v in r.hgetall(FACTORS_INDEX).items():
        try:
            rec = json.loads(v)
        except ValueError:
            rec = {"key": _s(k), "bytes": 0}
        if not isinstance(rec, dict):
            rec = {"key": _s(k), "bytes": 0}
        rec["key"] = _s(k)
        out.append(rec)
    return out


def list_factors(r: redis.Redis, owner: str) -> list[dict[str, Any]]:
    """The entries ``owner`` is an owner of, most recently used first."""
    entries = _all_entries(r)
    with r.pipeline(transaction=False) as pipe:
        for rec in entries:
            pipe.sismember(factor_owners(rec["key"]), owner)
        mine = pipe.execute() if entries else []
    out = [rec for rec, owned in zip(entries, mine, strict=True) if owned]
    out.sort(key=lambda e: float(e.get("last_used") or 0), reverse=True)
    return out


def release_factor(r: redis.Redis, key: str, owner: str) -> bool:
    """Drop ``owner``'s reference to entry ``key`` (deleting the entry when it was the last
    owner); False when there is no such entry or ``owner`` is not one of its owners."""
    release = r.register_script(_RELEASE)
    left = release(keys=[FACTORS_INDEX, factor_owners(key)], args=[key, owner, factor_chunk_prefix(key)])
    return int(left) >= 0


def cache_totals(r: redis.Redis) -> tuple[int, int]:
    """(entries, bytes) in the Redis tier."""
    entries = _all_entries(r)
    return len(entries), sum(int(e.get("bytes") or 0) for e in entries)
