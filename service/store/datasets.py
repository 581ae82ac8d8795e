"""Metadata of uploaded datasets in Redis; the bytes live in files under ``Settings.dataset_dir``.

* ``curvedit:dataset:<id>`` — string, JSON ``{id, owner, name, kind, bytes, sha256, records,
  fields, created_at}``; the bytes are in ``<dataset_dir>/<id>/data`` (``meta.json`` beside).
* ``curvedit:datasets:owner:<owner>`` — sorted set (scores 0) of the owner's ids, newest last.

Workers read ``<dataset_dir>/<id>/data`` directly (``workers/pipeline/sources.py``).
No TTL on either.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import redis

from contract import keys
from contract.store.jobs import utcnow


def new_dataset_id() -> str:
    """``ds_`` + 12 hex digits of epoch milliseconds + 16 random hex digits (sorts by time)."""
    return f"ds_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def dataset_dir_of(dataset_dir: str | os.PathLike[str], dataset_id: str) -> Path:
    """The directory holding ``data`` and ``meta.json`` of one dataset."""
    return Path(dataset_dir) / dataset_id


class DatasetStore:
    def __init__(self, redis_client: redis.Redis) -> None:
        self.r = redis_client

    def create(
        self,
        owner: str,
        *,
        dataset_id: str,
        name: str,
        kind: str,
        size: int,
        sha256: str,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        rec = {
            "id": dataset_id,
            "owner": owner,
            "name": name,
            "kind": kind,
            "bytes": size,
            "sha256": sha256,
            "created_at": utcnow(),
            **(extra or {}),
        }
        with self.r.pipeline() as pipe:
            pipe.set(keys.dataset(dataset_id), json.dumps(rec))
            pipe.zadd(keys.datasets_owner(owner), {dataset_id: 0})
            pipe.execute()
        return rec

    def get(self, dataset_id: str) -> dict[str, Any] | None:
        raw = self.r.get(keys.dataset(dataset_id))
        return json.loads(raw) if raw is not None else None

    def list(
        self, owner: str, *, cursor: str | None = None, limit: int = 20
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; ``cursor`` is the previous page's ``next_cursor``."""
        limit = max(1, min(int(limit), 1000))
        top = f"({cursor}" if cursor else "+"
        ids = [
            i.decode() if isinstance(i, bytes) else i
            for i in self.r.zrevrangebylex(keys.datasets_owner(owner), top, "-", start=0, num=limit + 1)
        ]
        more = len(ids) > limit
        ids = ids[:limit]
        raws = self.r.mget([keys.dataset(i) for i in ids]) if ids else []
        items = [json.loads(r) for r in raws if r is not None]
        return items, (ids[-1] if more and ids else None)

    def delete(self, dataset_id: str) -> dict[str, Any] | None:
        """Remove the metadata; returns it (the caller deletes the file)."""
        rec = self.get(dataset_id)
        if rec is None:
            return None
        with self.r.pipeline() as pipe:
            pipe.delete(keys.dataset(dataset_id))
            pipe.zrem(keys.datasets_owner(rec["owner"]), dataset_id)
            pipe.execute()
        return rec
