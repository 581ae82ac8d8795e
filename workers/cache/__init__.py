"""Content-addressed cache of K-FAC factor sums and their eigendecompositions (docs/workers.md).

``open_factor_cache(settings)`` picks the backend from ``Settings.factor_cache``: Redis
(chunked strings plus an index hash), a filesystem / fsspec tier, or none.
"""

from workers.cache.keys import CacheKey
from workers.cache.store import FactorCache, open_factor_cache

__all__ = ["CacheKey", "FactorCache", "open_factor_cache"]
