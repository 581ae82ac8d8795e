"""``GuardedCache``: a factor cache whose failures never fail a job.

The cache is an optimisation: if its backend errors (Redis unreachable, out of memory under
``noeviction``, a full disk), the job goes on without it. The first error is reported through
``on_error`` and the cache is switched off for the rest of the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from workers.cache.keys import CacheKey
from workers.cache.store import FactorCache

log = logging.getLogger(__name__)


class GuardedCache:
    """Wraps a ``FactorCache``; backend exceptions become misses / skipped writes."""

    def __init__(self, inner: FactorCache, on_error: Callable[[str], None] | None = None) -> None:
        self.inner = inner
        self.on_error = on_error
        self.disabled = False

    def _failed(self, op: str, exc: Exception) -> None:
        self.disabled = True
        msg = f"factor cache {op} failed ({type(exc).__name__}: {exc}); continuing without the cache"
        log.warning(msg)
        if self.on_error is not None:
            self.on_error(msg)

    def get(self, key: CacheKey) -> dict[str, torch.Tensor] | None:
        if self.disabled:
            return None
        try:
            return self.inner.get(key)
        except Exception as exc:  # noqa: BLE001 - any backend failure is a miss
            self._failed("read", exc)
            return None

    def put(self, key: CacheKey, tensors: dict[str, torch.Tensor]) -> bool:
        if self.disabled:
            return False
        try:
            return self.inner.put(key, tensors)
        except Exception as exc:  # noqa: BLE001 - a failed write only loses reuse
            self._failed("write", exc)
            return False

    def entries(self) -> list[dict[str, Any]]:
        return [] if self.disabled else self.inner.entries()

    def delete(self, digest: str) -> bool:
        return False if self.disabled else self.inner.delete(digest)
