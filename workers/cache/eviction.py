"""Least-recently-used eviction shared by the factor-cache backends.

Works on any store that lists its index records (``entries()``, each with ``key``, ``bytes``,
``last_used``) and deletes by key digest; only cache entries are ever touched.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class _Evictable(Protocol):
    def entries(self) -> list[dict[str, Any]]: ...

    def delete(self, digest: str) -> bool: ...


def evict_lru(store: _Evictable, budget_bytes: int, keep: str) -> list[str]:
    """Delete least-recently-used entries (never ``keep``) until the total fits ``budget_bytes``;
    returns the evicted keys."""
    records = store.entries()
    total = sum(int(r.get("bytes", 0)) for r in records)
    evicted: list[str] = []
    for rec in sorted(records, key=lambda r: float(r.get("last_used", 0))):
        if total <= budget_bytes:
            break
        if rec.get("key") == keep:
            continue
        store.delete(str(rec["key"]))
        evicted.append(str(rec["key"]))
        log.info("factor cache evicted %s (%s bytes)", rec.get("key"), rec.get("bytes"))
        total -= int(rec.get("bytes", 0))
    return evicted
