"""Webhook endpoints and their delivery log in Redis (``contract.keys``: ``curvedit:webhook:*``).

An endpoint is ``{id, owner, url, events, description, job_id, created_at, secret}`` stored as JSON;
``job_id`` is set for the endpoint a job spec's ``notify`` created (it only receives that job's
events) and null for one registered with ``POST /v1/webhooks``. The secret never leaves this
module except in the response that created the endpoint (``public`` drops it).

A delivery is ``{id, webhook_id, job_id, event, type, payload, status, attempts[...], created_at,
updated_at, next_attempt_at}``; ``id`` is also the ``webhook-id`` header, the same on every retry
and redelivery. Deliveries expire ``Settings.webhook_log_ttl_s`` after their last change.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, cast

import redis

from contract import keys

Record = dict[str, Any]
Records = list[Record]
PENDING, RETRYING, SUCCEEDED, FAILED = "pending", "retrying", "succeeded", "failed"
DELIVERY_STATUSES = (PENDING, RETRYING, SUCCEEDED, FAILED)
MAX_ENDPOINTS_PER_OWNER = 50


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def new_webhook_id() -> str:
    """``wh_`` + milliseconds since the epoch (12 hex digits) + 16 random hex digits: sortable by creation."""
    return f"wh_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def public(endpoint: Record) -> Record:
    """The endpoint as the API shows it after creation: without its secret."""
    return {k: v for k, v in endpoint.items() if k != "secret"}


class WebhookStore:
    """Endpoints and deliveries. ``redis_client`` may be created with or without ``decode_responses``."""

    def __init__(self, redis_client: redis.Redis, *, log_ttl_s: int = 30 * 24 * 3600) -> None:
        self.r = redis_client
        self.log_ttl_s = log_ttl_s

    # ------------------------------------------------------------------ endpoints
    def create(
        self,
        owner: str,
        url: str,
        events: list[str],
        secret: str,
        *,
        description: str | None = None,
        job_id: str | None = None,
    ) -> Record:
        endpoint: Record = {
            "id": new_webhook_id(),
            "owner": owner,
            "url": url,
            "events": list(events),
            "description": description,
            "job_id": job_id,
            "created_at": utcnow(),
            "secret": secret,
        }
        with self.r.pipeline() as pipe:
            pipe.set(keys.webhook(endpoint["id"]), json.dumps(endpoint))
            pipe.zadd(keys.webhooks_owner(owner), {endpoint["id"]: 0})
            if job_id is not None:
                pipe.sadd(keys.webhooks_job(job_id), endpoint["id"])
            pipe.execute()
        return endpoint

    def count(self, owner: str) -> int:
        return int(self.r.zcard(keys.webhooks_owner(owner)))

    def get(self, webhook_id: str) -> Record | None:
        raw = self.r.get(keys.webhook(webhook_id))
        return json.loads(_s(raw)) if raw is not None else None

    def list(self, owner: str, *, cursor: str | None = None, limit: int = 20) -> tuple[Records, str | None]:
        """Newest first; ``cursor`` is the previous page's ``next_cursor``."""
        top = f"({cursor}" if cursor else "+"
        ids = [_s(i) for i in self.r.zrevrangebylex(keys.webhooks_owner(owner), top, "-", start=0, num=limit + 1)]
        more = len(ids) > limit
        ids = ids[:limit]
        items = [e for e in (self.get(i) for i in ids) if e is not None]
        return items, (ids[-1] if more and ids else None)

    def delete(self, endpoint: Record) -> None:
        """Remove the endpoint and its delivery log; deliveries still queued find it gone and stop."""
        dids = [_s(d) for d in self.r.zrange(keys.webhook_deliveries(endpoint["id"]), 0, -1)]
        with self.r.pipeline() as pipe:
            pipe.delete(keys.webhook(endpoint["id"]), keys.webhook_deliveries(endpoint["id"]))
            pipe.zrem(keys.webhooks_owner(endpoint["owner"]), endpoint["id"])
            if endpoint.get("job_id"):
                pipe.srem(keys.webhooks_job(endpoint["job_id"]), endpoint["id"])
            for did in dids:
                pipe.delete(keys.webhook_delivery(did))
            pipe.execute()

    def subscribers(self, owner: str, job_id: str, event: str) -> Records:
        """Endpoints that receive ``event`` of job ``job_id``: the owner's registered endpoints and
        the job's own ``notify`` endpoint(s), each subscribed to ``event``."""
        ids = [_s(i) for i in self.r.zrange(keys.webhooks_owner(owner), 0, -1)]
        out = []
        for endpoint in (self.get(i) for i in ids):
            if endpoint is None or event not in endpoint["events"]:
                continue
            if endpoint.get("job_id") in (None, job_id):
                out.append(endpoint)
        return out

    # ------------------------------------------------------------------ deliveries
    def add_delivery(self, delivery: Record) -> bool:
        """Store a new delivery (``NX``: False when one with this id already exists) and index it."""
        created = self.r.set(keys.webhook_delivery(delivery["id"]), json.dumps(delivery), nx=True, ex=self.log_ttl_s)
        if created:
            self.r.zadd(keys.webhook_deliveries(delivery["webhook_id"]), {delivery["id"]: 0})
        return bool(created)

    def get_delivery(self, delivery_id: str) -> Record | None:
        raw = self.r.get(keys.webhook_delivery(delivery_id))
        return json.loads(_s(raw)) if raw is not None else None

    def deliveries(self, webhook_id: str, *, cursor: str | None = None, limit: int = 20) -> tuple[Records, str | None]:
        """A page of the endpoint's delivery log, newest first (expired entries are skipped)."""
        top = f"({cursor}" if cursor else "+"
        index = keys.webhook_deliveries(webhook_id)
        ids = [_s(i) for i in self.r.zrevrangebylex(index, top, "-", start=0, num=limit + 1)]
        more = len(ids) > limit
        ids = ids[:limit]
        items = []
        for did in ids:
            rec = self.get_delivery(did)
            if rec is None:
                self.r.zrem(index, did)
            else:
                items.append(rec)
        return items, (ids[-1] if more and ids else None)

    def update_delivery(self, delivery_id: str, fn: Callable[[Record], Record | None]) -> Record | None:
        """Apply ``fn`` to the delivery inside WATCH/MULTI; returns the new record (None: gone, or
        ``fn`` declined by returning None)."""
        key = keys.webhook_delivery(delivery_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.unwatch()
                        return None
                    new = fn(cast(Record, json.loads(_s(raw))))
                    if new is None:
                        pipe.unwatch()
                        return None
                    new["updated_at"] = utcnow()
                    pipe.multi()
                    pipe.set(key, json.dumps(new), ex=self.log_ttl_s)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue
