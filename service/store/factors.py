"""Read-and-delete view of the factor cache's Redis tier for the gateway (no torch).

The cache (``workers/cache/redis_store.py``) owns the layout: ``curvedit:factors:index`` is a hash
``{key: JSON {key, bytes, created_at, last_used, model, module, kind, n_chunks, sha256, args}}``
and ``curvedit:factors:chunk:{key}:{i}`` (``i < n_chunks``) hold the data. Deleting removes the
index field and the chunks in one MULTI, as the cache itself does. The filesystem tier is not
listed here.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from contract.keys import FACTORS_INDEX


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def list_factors(r: redis.Redis) -> list[dict[str, Any]]:
    """Every indexed entry, most recently used first."""
    out = []
    for k, v in r.hgetall(FACTORS_INDEX).items():
        try:
            rec = json.loads(v)
        except ValueError:
            rec = {"key": _s(k), "bytes": 0}
        rec.setdefault("key", _s(k))
        out.append(rec)
    out.sort(key=lambda e: float(e.get("last_used") or 0), reverse=True)
    return out


def delete_factor(r: redis.Redis, key: str) -> bool:
    """Remove one entry (index field and chunks); False when no such entry."""
    raw = r.hget(FACTORS_INDEX, key)
    if raw is None:
        return False
    try:
        n = int(json.loads(raw).get("n_chunks", 0))
    except (ValueError, AttributeError):
        n = 0
    chunk_keys = [f"curvedit:factors:chunk:{key}:{i}" for i in range(n)]
    chunk_keys += [_s(k) for k in r.scan_iter(match=f"curvedit:factors:chunk:{key}:*", count=1000)]
    with r.pipeline() as pipe:
        pipe.hdel(FACTORS_INDEX, key)
        if chunk_keys:
            pipe.delete(*set(chunk_keys))
        pipe.execute()
    return True


def cache_totals(r: redis.Redis) -> tuple[int, int]:
    """(entries, bytes) in the Redis tier."""
    entries = list_factors(r)
    return len(entries), sum(int(e.get("bytes") or 0) for e in entries)
