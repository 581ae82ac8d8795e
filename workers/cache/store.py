"""The ``FactorCache`` interface and the factory that picks a backend from the settings."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import torch

from contract.settings import Settings
from workers.cache.keys import CacheKey

log = logging.getLogger(__name__)


class FactorCache(Protocol):
    """A byte-budgeted, LRU-evicted store of tensor dicts addressed by ``CacheKey``."""

    def get(self, key: CacheKey) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None on a miss (a corrupt or partial entry is a miss and is deleted)."""

    def put(self, key: CacheKey, tensors: dict[str, torch.Tensor]) -> bool:
        """Store atomically; False when the entry alone exceeds the budget (nothing stored)."""

    def entries(self) -> list[dict[str, Any]]:
        """Index records: {key, bytes, created_at, last_used, model, module, kind, n_chunks, sha256, args}."""

    def delete(self, digest: str) -> bool:
        """Remove one entry by its key digest; True when something was removed."""


def open_factor_cache(
    settings: Settings, redis_client: Any | None = None, *, owner: str | None = None
) -> FactorCache | None:
    """Backend from ``settings.factor_cache``: 'off' -> None; 'redis' -> the Redis store (needs
    ``redis_client`` or ``settings.redis_url``; without either, no cache); anything else is an
    fsspec URI or a directory for the filesystem tier. ``owner`` (a job's owner) is recorded on
    every entry the store writes or reads, so ``GET /v1/factors`` shows that owner its entries."""
    mode = settings.factor_cache.strip()
    if mode == "off":
        return None
    if mode == "redis":
        from workers.cache.redis_store import RedisFactorStore

        if redis_client is None:
            if not settings.redis_url:
                log.warning("factor_cache='redis' but no redis_url is configured: running without a cache")
                return None
            import redis

            redis_client = redis.Redis.from_url(settings.redis_url)
        return RedisFactorStore(
            redis_client,
            budget_bytes=settings.factor_cache_bytes,
            chunk_bytes=settings.factor_chunk_bytes,
            owner=owner,
        )
    from workers.cache.fs_store import FsFactorStore

    return FsFactorStore(mode, budget_bytes=settings.factor_cache_bytes, owner=owner)
