"""Serialization of cache values: safetensors bytes (never pickle), checksummed with sha256."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from workers.cache.keys import CacheKey


def encode(tensors: dict[str, torch.Tensor]) -> bytes:
    """Tensors -> safetensors bytes (moved to CPU, made contiguous)."""
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


def decode(blob: bytes) -> dict[str, torch.Tensor]:
    return st_load(blob)


def checksum(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def index_record(key: CacheKey, blob: bytes, n_chunks: int) -> dict[str, Any]:
    """The metadata record both backends keep beside an entry (the Redis index hash holds the same):
    digest, size, timestamps, what it is, chunk count, checksum and the arguments that made it."""
    now = time.time()
    return {
        "key": key.digest,
        "bytes": len(blob),
        "created_at": now,
        "last_used": now,
        "model": key.model,
        "module": key.module,
        "kind": key.kind,
        "n_chunks": n_chunks,
        "sha256": checksum(blob),
        "args": key.args,
    }
