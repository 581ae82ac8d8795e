"""Factor cache backends against a real Redis and a real directory: round trips, chunking,
corruption, argument mismatch and LRU budget eviction."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from contract.settings import Settings
from workers.cache import CacheKey, open_factor_cache
from workers.cache.codec import encode
from workers.cache.fs_store import FsFactorStore
from workers.cache.redis_store import RedisFactorStore, chunk_key

INDEX = "curvedit:factors:index"


def _tensors(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"sum": torch.randn(n, n, generator=g), "count": torch.tensor(1234, dtype=torch.int64)}


def _key(module: str = "model.layers.0.mlp.gate_proj", **args: object) -> CacheKey:
    base = {"model_fingerprint": "abc", "max_tokens": 100, "seq_len": 16, "fisher": "sampled", "seed": 0}
    base.update(args)
    return CacheKey(kind="G", module=module, args=base, model="tiny")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_redis_chunked_round_trip_is_exact(redis_client) -> None:
    store = RedisFactorStore(redis_client, budget_bytes=10**8, chunk_bytes=1000)
    key, value = _key(), _tensors()
    assert store.get(key) is None
    assert store.put(key, value)
    rec = json.loads(redis_client.hget(INDEX, key.digest))
    assert set(rec) == {
        "key",
        "bytes",
        "created_at",
        "last_used",
        "model",
        "module",
        "kind",
        "n_chunks",
        "sha256",
        "args",
    }
    assert rec["n_chunks"] > 1 and rec["n_chunks"] == -(-rec["bytes"] // 1000)
    assert all(len(redis_client.get(chunk_key(key.digest, i))) <= 1000 for i in range(rec["n_chunks"]))
    assert redis_client.ttl(chunk_key(key.digest, 0)) == -1
    assert not list(redis_client.scan_iter("curvedit:factors:tmp:*"))
    got = store.get(key)
    assert got is not None and _same(got, value)


def test_redis_other_args_do_not_reuse(redis_client) -> None:
    store = RedisFactorStore(redis_client, budget_bytes=10**8, chunk_bytes=4096)
    store.put(_key(seed=0), _tensors())
    assert store.get(_key(seed=1)) is None
    assert store.get(_key(module="model.layers.1.mlp.gate_proj")) is None
    assert store.get(_key(seed=0)) is not None


@pytest.mark.parametrize("damage", ["flip", "drop"])
def test_redis_corrupt_or_partial_entry_is_a_miss_and_deleted(redis_client, damage: str) -> None:
    store = RedisFactorStore(redis_client, budget_bytes=10**8, chunk_bytes=1000)
    key = _key()
    store.put(key, _tensors())
    ck = chunk_key(key.digest, 1)
    if damage == "flip":
        raw = bytearray(redis_client.get(ck))
        raw[10] ^= 0xFF
        redis_client.set(ck, bytes(raw))
    else:
        redis_client.delete(ck)
    assert store.get(key) is None
    assert redis_client.hget(INDEX, key.digest) is None
    assert not list(redis_client.scan_iter(f"curvedit:factors:chunk:{key.digest}:*"))


def test_redis_lru_eviction_respects_budget_and_spares_other_keys(redis_client) -> None:
    one = len(encode(_tensors()))
    store = RedisFactorStore(redis_client, budget_bytes=int(2.5 * one), chunk_bytes=2000)
    redis_client.set("curvedit:job:keepme", "job record")
    k1, k2, k3 = _key("m1"), _key("m2"), _key("m3")
    store.put(k1, _tensors(seed=1))
    time.sleep(0.01)
    store.put(k2, _tensors(seed=2))
    time.sleep(0.01)
    assert store.get(k1) is not None  # k1 becomes most recently used; k2 is now the LRU entry
    time.sleep(0.01)
    store.put(k3, _tensors(seed=3))
    assert store.get(k2) is None
    assert store.get(k1) is not None and store.get(k3) is not None
    assert sum(r["bytes"] for r in store.entries()) <= store.budget_bytes
    assert not list(redis_client.scan_iter(f"curvedit:factors:chunk:{k2.digest}:*"))
    assert redis_client.get("curvedit:job:keepme") == b"job record"


def test_redis_entry_larger_than_budget_is_not_stored(redis_client) -> None:
    store = RedisFactorStore(redis_client, budget_bytes=100, chunk_bytes=4096)
    assert not store.put(_key(), _tensors())
    assert store.entries() == []


def test_fs_tier_round_trip_corruption_and_eviction(tmp_path: Path) -> None:
    one = len(encode(_tensors()))
    store = FsFactorStore(f"file://{tmp_path}/cache", budget_bytes=int(1.5 * one))
    k1, k2 = _key("m1"), _key("m2")
    assert store.put(k1, _tensors(seed=1))
    got = store.get(k1)
    assert got is not None and _same(got, _tensors(seed=1))
    assert store.get(_key("m1", seed=5)) is None
    store.put(k2, _tensors(seed=2))  # over budget: k1 (LRU) evicted
    assert store.get(k1) is None and store.get(k2) is not None
    blob = tmp_path / "cache" / f"{k2.digest}.safetensors"
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 0xFF
    blob.write_bytes(bytes(raw))
    assert store.get(k2) is None and not blob.exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]


def test_open_factor_cache_modes(tmp_path: Path, redis_url: str) -> None:
    assert open_factor_cache(Settings(factor_cache="off")) is None
    assert isinstance(open_factor_cache(Settings(factor_cache="redis", redis_url=redis_url)), RedisFactorStore)
    assert isinstance(open_factor_cache(Settings(factor_cache=str(tmp_path / "c"))), FsFactorStore)


def test_guarded_cache_turns_backend_failures_into_misses() -> None:
    import redis

    from workers.cache.guarded import GuardedCache

    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    errors: list[str] = []
    cache = GuardedCache(RedisFactorStore(dead, budget_bytes=10**6, chunk_bytes=4096), errors.append)
    assert cache.get(_key()) is None
    assert not cache.put(_key(), _tensors())
    assert len(errors) == 1 and "continuing without the cache" in errors[0]
